"""The error every command reports in one line: a problem with the user's files, columns or options."""


class InputError(ValueError):
    """A problem the user can fix (a file, a column, an option, a value), told in one line.

    Every user error the library raises is one; the command line shows it without a traceback.
    """


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""


def check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse, naming it, a ``value`` that is not a positive int (``True`` is not one); None passes if ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")

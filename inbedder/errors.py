"""The error every command reports in one line: a problem with the user's files, columns or options.

A message that tells the user what to change names it as the user would: ``option("resume")``
reads ``resume=True`` from Python and ``--resume`` from the command line (``InputError.render``),
and ``either(python, command_line)`` carries both wordings of a longer remedy.
"""

from __future__ import annotations

import re

_MARK, _SEP = "\x1f", "\x1e"
_SPOKEN = re.compile(f"{_MARK}([^{_MARK}{_SEP}]*){_SEP}([^{_MARK}{_SEP}]*){_MARK}")


def either(python: str, command_line: str) -> str:
    """A remedy in both wordings, for a message of ``InputError``: each reader sees their own."""
    return f"{_MARK}{python}{_SEP}{command_line}{_MARK}"


def option(name: str, value: str | None = "True") -> str:
    """An option named in a message: ``name=value`` (or ``name`` when ``value`` is None) in Python,
    ``--name`` on the command line."""
    return either(name if value is None else f"{name}={value}", "--" + name.replace("_", "-"))


class InputError(ValueError):
    """A problem the user can fix (a file, a column, an option, a value), told in one line.

    Every user error the library raises is one; the command line shows it without a traceback,
    its options named as flags (``render(command_line=True)``).
    """

    def render(self, command_line: bool = False) -> str:
        """The message with its options named for Python (``str(err)``) or for the command line."""
        return _SPOKEN.sub(lambda m: m.group(2 if command_line else 1), super().__str__())

    def __str__(self) -> str:
        return self.render()


def as_input_error(err: BaseException) -> InputError:
    """``err`` as an ``InputError``: itself when it is one (its options still named for each reader)."""
    return err if isinstance(err, InputError) else InputError(str(err))


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""


def check_positive_int(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse, naming it, a ``value`` that is not a positive int (``True`` is not one); None passes if ``optional``."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")

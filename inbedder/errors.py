"""The error every command reports in one line: a problem with the user's files, columns or options."""


class InputError(ValueError):
    """A problem with the user's files or columns, told in one line."""


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C); the message says what was kept and how to go on."""

"""The error every command reports in one line: a problem with the user's files, columns or options."""


class InputError(ValueError):
    """A problem with the user's files or columns, told in one line."""

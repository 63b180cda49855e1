"""Errors that mean "the user asked for something we can't do": the CLI prints them in one line."""


class UserError(ValueError):
    """Bad input (a path, a name, a value): reported as ``error: ...`` with exit code 2."""

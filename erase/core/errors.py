"""Errors that mean "the user asked for something we can't do": the CLI prints them in one line."""


class UserError(ValueError):
    """Bad input (a path, a name, a value): reported as ``error: ...`` with exit code 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a job: says where the checkpoints are and how to continue."""

"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (unknown name, missing file, bad value).

    The message must be one line naming the bad value and what is allowed.
    A ``ValueError``, so library callers catching ``ValueError`` see it too.
    """

    exit_code = 2


class Interrupted(Exception):
    """The user interrupted a run (Ctrl-C); the CLI prints the one-line message and exits 130."""

    exit_code = 130


class DataNotAvailable(UserError):
    """A dataset that could not be obtained (a "not run" marker stands in its place).

    Pipeline stages given ``--missing-ok`` record "not run" outputs instead of failing.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message

"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (unknown name, missing file, bad value).

    The message must be one line naming the bad value and what is allowed.
    """

    exit_code = 2

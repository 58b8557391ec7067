"""The one exception a user sees: a clear one-line message and an exit status."""


class UserError(Exception):
    """Bad input or an unusable environment. The CLI prints it on one line and exits."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code

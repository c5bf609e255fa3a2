"""The CLI's one error type: a message for the user and an exit code, printed on one line by ``main``."""


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code

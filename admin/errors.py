"""The CLI's one error type: a message for the user and an exit code, printed on one line by ``main``.

Exit codes (documented in ``vitserve --help``): 0 success; 1 failed (the work itself went wrong); 2 usage (bad
arguments: argparse's own code); 3 not found (a model, version, file or Hub id that does not exist); 4 refused
(a request the command will not carry out as given: an existing destination, an unsupported combination);
5 partial (the command finished but skipped some inputs, e.g. unreadable images); 130 interrupted.
"""

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_PARTIAL = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0 success   1 failed   2 usage   3 not found   4 refused   5 partial (some inputs skipped)   130 interrupted
"""


class CommandError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

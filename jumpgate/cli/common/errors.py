"""Errors of the command-line clients; each prints as one line and exits non-zero.

::

    CLIError            a message for the person at the terminal (exit 1)
    └── APIError        the platform refused a request (carries status and problem type)
"""


class CLIError(Exception):
    """Something the person can fix; ``str()`` says what and how."""


class APIError(CLIError):
    """A problem+json answer from the platform."""

    def __init__(self, status: int, problem_type: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type

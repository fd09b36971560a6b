"""Errors of the command-line clients; each prints as one line and exits non-zero.

``CLIError`` is a message for the person at the terminal (exit 1). Errors of the API client
(``protocol.client.ClientError``, ``APIError``) print the same way, and so does a request body
the models refuse (``protocol.client.invalid_detail``).
"""


class CLIError(Exception):
    """Something the person can fix; ``str()`` says what and how."""

"""Reading secrets from a terminal or, for scripts, from standard input."""

import getpass
import sys

from jumpgate.cli.common.errors import CLIError


def password_from_stdin() -> str:
    """The first line of standard input, without its newline."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CLIError("--password-stdin: standard input was empty")
    return line


def ask(prompt: str, *, secret: bool = True) -> str:
    """Ask at the terminal; refuse when there is none rather than hang."""
    if not sys.stdin.isatty():
        raise CLIError(f"{prompt.strip(': ')} is needed and there is no terminal: use the flags")
    return getpass.getpass(prompt) if secret else input(prompt)

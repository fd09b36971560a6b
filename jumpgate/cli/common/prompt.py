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


def ask(prompt: str, *, needs: str, flag: str, secret: bool = True) -> str:
    """Ask at the terminal; refuse when there is none rather than hang, naming what was
    needed (``needs``) and the ``flag`` that gives it without one."""
    if not sys.stdin.isatty():
        raise CLIError(f"the {needs} is needed and there is no terminal: pass it with {flag}")
    return getpass.getpass(prompt) if secret else input(prompt)

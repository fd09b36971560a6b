"""How every CLI exits: one line on stderr for a known error, exit 1; never a traceback."""

import os
import sys
from collections.abc import Callable

from pydantic import ValidationError

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.common.output import printable
from jumpgate.protocol.client import ClientError, invalid_detail


def run(program: str, main: Callable[[], int]) -> int:
    """Call ``main``; print known errors as ``program: error: ...`` and exit non-zero."""
    standard_streams_open()
    try:
        return main()
    except (CLIError, ClientError) as exc:
        # One line, whatever the message carries (a platform's answer may quote a name
        # someone else chose): control characters are shown, not obeyed.
        print(f"{program}: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        # A request body the models refuse, said as the platform would have said it
        print(f"{program}: error: {printable(invalid_detail(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def standard_streams_open() -> None:
    """Open /dev/null on a closed stdin, stdout or stderr, as ssh(1) does at start: else the
    next descriptor opened (an event loop's epoll, a socket) would take its number and be
    written to as if it were the stream (``jump ssh host cmd >&-`` crashed)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: ``fd`` itself
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
    # Python made no file object of a stream closed when it started: make it now.
    if sys.stdin is None:
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own stdin)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115

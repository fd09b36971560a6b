"""How every CLI exits: one line on stderr for a known error, exit 1; never a traceback."""

import os
import sys
from collections.abc import Callable

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.common.output import printable
from jumpgate.protocol.client import ClientError


def run(program: str, main: Callable[[], int]) -> int:
    """Call ``main``; print known errors as ``program: error: ...`` and exit non-zero."""
    try:
        return main()
    except (CLIError, ClientError) as exc:
        # One line, whatever the message carries (a platform's answer may quote a name
        # someone else chose): control characters are shown, not obeyed.
        print(f"{program}: error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130

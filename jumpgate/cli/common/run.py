"""How every CLI exits: one line on stderr for a known error, exit 1; never a traceback."""

import sys
from collections.abc import Callable

from jumpgate.cli.common.errors import CLIError


def run(program: str, main: Callable[[], int]) -> int:
    """Call ``main``; print ``CLIError``s as ``program: error: ...`` and exit non-zero."""
    try:
        return main()
    except CLIError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130

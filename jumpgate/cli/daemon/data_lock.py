"""One ``jumpgate start`` (or ``demo``) per data dir: a second one on the same state would
share its store and master key, and take its node's tunnel away (a newcomer whose ports
were taken ran ``make up`` again on other ports, and did just that)."""

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from jumpgate.cli.common.errors import CLIError

LOCK_FILE = "jumpgate.pid"
"""In the data dir: locked while a daemon runs on it, and naming its process."""


def hold(data_dir: Path, *, demo: bool = False) -> IO[str]:
    """Lock ``data_dir`` for this process until it exits (keep what is returned), or a
    ``CLIError`` naming the process that holds it. The lock goes with the process, however
    it ends: nothing is left to clean up after a crash."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    held = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        pid = held.read().strip()[:20]
        held.close()
        whose = f" (pid {pid})" if pid.isdigit() else ""
        instead = "; with make up: make up DATA_DIR=<another dir>" if demo else ""
        raise CLIError(
            f"data dir {data_dir} is in use by another jumpgate{whose}: stop it (Ctrl-C "
            f"where it runs), or give another --data-dir{instead}"
        ) from None
    held.seek(0)
    held.truncate()
    held.write(f"{os.getpid()}\n")
    held.flush()
    return held


def release(held: IO[str]) -> None:
    """Let the data dir go (the process is stopping)."""
    with contextlib.suppress(OSError):
        held.close()

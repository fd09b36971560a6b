"""The daemon says "platform started" only once everything it listens on is bound: the
diagnostics port was bound after it, so a port taken in between (a suite run saw it, twice)
ended a daemon that had said it started, with asyncio's message instead of one line."""

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from jumpgate.cli.daemon.config import load
from jumpgate.cli.daemon.platform import Daemon
from jumpgate.control_plane.handlers.api import public_addrs_of

pytestmark = pytest.mark.net


def test_a_diagnostics_port_taken_after_the_check_stops_the_start_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load(
            None,
            {
                "data_dir": str(tmp_path / "data"),
                "web_listen_addr": "127.0.0.1:0",
                "ssh_listen_addr": "127.0.0.1:0",
                "tunnel_listen_addr": "127.0.0.1:0",
                "diag_addr": f"127.0.0.1:{port}",
            },
        )
        daemon = Daemon(config)
        said = (
            f"diag_addr: 127.0.0.1:{port} is in use: stop what uses it or choose another port "
            "(--diag-addr)"
        )
        with (
            caplog.at_level(logging.INFO, logger="jumpgate"),
            pytest.raises(OSError, match=f"^{re.escape(said)}$"),
        ):
            asyncio.run(asyncio.wait_for(daemon.run(), 30))
    assert "platform started" not in caplog.messages
    assert not daemon.ready.is_set()
    # nothing of it is left running or open: its pools' threads, its store
    assert [t.name for t in threading.enumerate() if t.name.startswith("control-plane")] == []
    assert not [p for p in _open_files() if p.startswith(str(tmp_path / "data"))]
    with socket.socket() as again:  # what it had bound is let go
        again.bind(("127.0.0.1", daemon.web_port))


def _open_files() -> list[str]:
    """What this process holds open, by path."""
    paths = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            paths.append(os.readlink(fd))
    return paths


def test_ports_picked_by_the_system_are_the_ones_announced(tmp_path: Path) -> None:
    """Listen addresses with port 0 (any free port): users and nodes are told the ports bound,
    not 0 (a demo on --tunnel-listen-addr 127.0.0.1:0 had its node dial demo.localhost:0)."""
    zero = "127.0.0.1:0"
    config = load(
        None,
        {
            "data_dir": str(tmp_path / "data"),
            "web_listen_addr": zero,
            "ssh_listen_addr": zero,
            "tunnel_listen_addr": zero,
        },
    )
    daemon = Daemon(config)

    async def announced() -> tuple[str, str]:
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 30)
        try:
            return public_addrs_of(daemon.plane, "acme")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    ssh, tunnel = asyncio.run(announced())
    assert daemon.ssh_port != 0
    assert daemon.tunnel_port != 0
    assert (ssh, tunnel) == (
        f"acme.localhost:{daemon.ssh_port}",
        f"acme.localhost:{daemon.tunnel_port}",
    )

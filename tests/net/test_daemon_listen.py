"""The daemon says "platform started" only once everything it listens on is bound: the
diagnostics port was bound after it, so a port taken in between (a suite run saw it, twice)
ended a daemon that had said it started, with asyncio's message instead of one line."""

import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest

from jumpgate.cli.daemon.config import load
from jumpgate.cli.daemon.platform import Daemon

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
    with socket.socket() as again:  # what it had bound is let go
        again.bind(("127.0.0.1", daemon.web_port))

"""SIGTERM of the platform with live sessions: every session's end is in the audit log.

Issue 14, item 3: the proxy flushed its audit outbox before the user connections closed, so
the ``session.end`` of every session still live at shutdown was lost. Now the proxy stops
accepting, ends its sessions (each with its ``session.end``), flushes, then exits, all within
the drain timeout.
"""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Site, audit_events
from tests.security.stories import broken
from tests.security.stories import sessions as stories

pytestmark = [pytest.mark.e2e, pytest.mark.net]

SESSIONS = 3


def _live_session(site: Site, n: int) -> subprocess.Popen[bytes]:
    """An OpenSSH session through the proxy that prints a line, then waits a long time."""
    process = subprocess.Popen(
        ["ssh", "-F", str(site.ssh_config), "web-1", f"echo ready-{n}; sleep 120"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the ProxyJump helper can be stopped with it
    )
    assert process.stdout is not None
    assert process.stdout.readline() == f"ready-{n}\n".encode()
    return process


def _end(sessions: list[subprocess.Popen[bytes]]) -> None:
    for process in sessions:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _proxy_events(site: Site, event_type: str, count: int) -> list[dict[str, object]]:
    return audit_events(site, event_type, count, where=lambda e: e.get("origin") == "proxy")


def test_sigterm_ends_every_live_session_with_its_audit_event(site: Site, tmp_path: Path) -> None:
    sessions = []
    try:
        sessions = [_live_session(site, n) for n in range(SESSIONS)]
        started = time.monotonic()
        assert site.cluster.stop(signal.SIGTERM) == 0
        took = time.monotonic() - started
        for process in sessions:
            process.wait(timeout=10)  # the proxy closed them: none is left hanging
    finally:
        _end(sessions)
    assert took < 12, f"the platform took {took:.1f}s to stop (drain timeout 10s)"
    log = site.cluster.log.read_text()

    site.cluster.start()  # the same data dir: read what the first run wrote
    starts = _proxy_events(site, "session.start", SESSIONS)
    ends = _proxy_events(site, "session.end", SESSIONS)
    started_ids = {e["session_id"] for e in starts}
    ended_ids = {e["session_id"] for e in ends}
    assert len(started_ids) == SESSIONS, starts
    assert ended_ids == started_ids, f"session.end missing for {started_ids - ended_ids}"
    for end in ends:
        assert end["user"] == "alice"
        assert end["nodename"] == "web-1"
    assert '"draining"' in log, log[-2000:]
    # the node's own story of each session, sent once its tunnel is back
    site.node.wait_tunnel()
    at_node = stories(site, "node", SESSIONS)
    assert broken(at_node, "node") == []
    assert len(at_node) == SESSIONS


def test_a_session_that_will_not_close_is_cut_at_the_drain_deadline(site: Site) -> None:
    """A client that stops answering (here SIGSTOP) never acknowledges its channel's close:
    at the drain deadline the proxy cuts it, writes its end anyway, and exits."""
    site.cluster.stop()
    site.cluster.extra_config = "drain_timeout: 3s\n"
    site.node.offset = len(site.node.log.read_text())
    site.cluster.start()
    site.node.wait_tunnel()
    sessions = []
    try:
        sessions = [_live_session(site, n) for n in range(2)]
        os.killpg(sessions[0].pid, signal.SIGSTOP)
        started = time.monotonic()
        assert site.cluster.stop(signal.SIGTERM) == 0
        took = time.monotonic() - started
    finally:
        _end(sessions)
    assert 2.0 < took < 5.0, f"the platform took {took:.1f}s to stop (drain timeout 3s)"
    log = site.cluster.log.read_text()
    assert log.count('"session cut at the drain deadline"') == 1, log[-2000:]

    site.cluster.start()
    starts = _proxy_events(site, "session.start", 2)
    ends = _proxy_events(site, "session.end", 2)
    assert {e["session_id"] for e in ends} == {e["session_id"] for e in starts}
    assert len(ends) == 2, ends

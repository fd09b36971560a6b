"""Issue 14, second adversarial review, finding 4: any user could make the node drop other
users' audit events. Pipelined SFTP renames of missing 2,000-character paths (each an audited
event of about 4 KB) filled the node's spool at about 3.5 MiB/s, against the 256 KiB/s the
proxy takes of a node: other sessions' ``session.start``, ``exec`` and ``session.end`` waited
behind the flood for minutes, then were dropped, and no ``audit.dropped`` said so.

A session is held to an audit budget and ended (with a ``W`` event) when it goes over it; a
session's lifecycle events go ahead of the transfer events, so one user's flood delays no
other session's story."""

import contextlib
import struct
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Site

pytestmark = [pytest.mark.e2e, pytest.mark.net]

FLOOD_SECONDS = 20.0
FOLLOW_SECONDS = 15.0
"""How long another session's node events may take to reach the audit log during the flood."""


def _packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _discard(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        while stream.read(65536):
            pass


def _flood_once(site: Site, until: float) -> float:
    """One SFTP session sending renames of missing long paths (and small ``extended``
    requests) as fast as it can until ``until`` or until the node ends it; how long it
    lived once it began sending."""
    started = time.monotonic()
    client = subprocess.Popen(
        ["ssh", "-F", str(site.ssh_config), "-s", "web-1", "sftp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert client.stdin is not None
    assert client.stdout is not None
    stdin, stdout = client.stdin, client.stdout
    reader = threading.Thread(target=_discard, args=(stdout,), daemon=True)
    try:
        stdin.write(_packet(1, struct.pack(">I", 3)))
        stdin.flush()
        (length,) = struct.unpack(">I", stdout.read(4))
        stdout.read(length)  # VERSION: the watcher follows the stream from here
        started = time.monotonic()
        reader.start()
        first = b"/nonexistent/" + b"a" * 1980
        second = b"/nonexistent/" + b"b" * 1980
        request = 1
        while time.monotonic() < until and client.poll() is None:
            batch = b"".join(
                _packet(18, struct.pack(">I", request + n) + _string(first) + _string(second))
                if n % 4
                else _packet(200, struct.pack(">I", request + n) + _string(b"x"))
                for n in range(100)
            )
            request += 100
            stdin.write(batch)
            stdin.flush()
            time.sleep(0.02)
    except (BrokenPipeError, ValueError, OSError):
        pass  # the node ended the session
    finally:
        lived = time.monotonic() - started
        client.kill()
        client.wait(timeout=10)
        if reader.is_alive():
            reader.join(10)
        with contextlib.suppress(OSError):
            stdin.close()
        stdout.close()
    return lived


def _flood(site: Site, seconds: float, lived: list[float]) -> None:
    """Flood for ``seconds``, opening a new session each time the node ends one."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        lived.append(_flood_once(site, until))


def _search(site: Site, event_type: str) -> list[dict[str, Any]]:
    argv = ["jumpctl", "audit", "search", "--type", event_type, "--limit", "1000"]
    return list(site.admin.ok(*argv, "--format", "json").json())


def _node_story(site: Site, marker: str, seconds: float) -> dict[str, list[dict[str, Any]]]:
    """The node's events of the session that ran ``marker``'s command, once its
    ``session.start``, ``exec`` and ``session.end`` are all in, or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    story: dict[str, list[dict[str, Any]]] = {}
    while time.monotonic() < deadline:
        execs = [
            e
            for e in _search(site, "exec")
            if e.get("origin") == "node" and marker in str(e.get("command"))
        ]
        if execs:
            session = execs[0]["session_id"]
            story = {"exec": execs}
            for kind in ("session.start", "session.end"):
                story[kind] = [
                    e
                    for e in _search(site, kind)
                    if e.get("origin") == "node" and e.get("session_id") == session
                ]
            if all(story.values()):
                return story
        time.sleep(0.5)
    return story


def test_one_users_sftp_flood_neither_hides_nor_delays_another_sessions_events(
    site: Site,
) -> None:
    lived: list[float] = []
    flood = threading.Thread(target=_flood, args=(site, FLOOD_SECONDS, lived), daemon=True)
    flood.start()
    time.sleep(5)  # the flood is well under way
    marker = f"HIDDEN-{uuid.uuid4().hex[:10]}"
    answer = site.ssh(f"echo {marker}")
    assert answer.returncode == 0, answer.stderr
    ran = time.monotonic()
    story = _node_story(site, marker, FOLLOW_SECONDS)
    waited = time.monotonic() - ran
    assert all(story.get(k) for k in ("session.start", "exec", "session.end")), (
        f"the node's events of the session that ran {marker} did not arrive within "
        f"{FOLLOW_SECONDS:.0f} s of a flood: {sorted(k for k, v in story.items() if v)}"
    )
    assert waited < FOLLOW_SECONDS, waited
    flood.join(FLOOD_SECONDS + 30)
    assert lived, "the flood never ran"
    assert lived[0] < FLOOD_SECONDS / 2, f"the flooding session was not ended: lived {lived}"
    over = [e for e in _search(site, "session.over_budget") if e.get("origin") == "node"]
    assert over, "no event says the flooding session went over its audit budget"
    assert all(e["code"].endswith("W") and e["user"] == "alice" for e in over), over
    assert "budget" in str(over[0].get("error")), over[0]
    ended = [
        e
        for e in _search(site, "session.end")
        if e.get("origin") == "node" and e.get("session_id") == over[0]["session_id"]
    ]
    assert ended, "the session over its budget has no session.end"
    assert "budget" in str(ended[0].get("reason")), ended[0]

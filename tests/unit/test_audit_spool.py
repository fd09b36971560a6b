"""The agent's audit spool: events wait on disk (append-only, fsync'd, private) until the
platform takes them, survive a restart (or kill -9) of the agent, and are bounded."""

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from jumpgate.node_agent import audit
from jumpgate.node_agent.audit_lanes import AuditLanes
from jumpgate.node_agent.audit_spool import AuditSpool

Event = dict[str, Any]


def _events(count: int, start: int = 0) -> list[Event]:
    return [
        audit.event("exec", command=f"cmd-{n}", exit_code=0) for n in range(start, start + count)
    ]


def _commands(events: list[Event]) -> list[str]:
    return [e["fields"]["command"] for e in events]


class _Platform:
    """Takes batches, or refuses them while ``down``."""

    def __init__(self) -> None:
        self.taken: list[Event] = []
        self.down = False

    async def send(self, batch: list[Event]) -> None:
        if self.down:
            raise OSError("tunnel down")
        self.taken.extend(batch)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_events_wait_on_disk_and_outlive_the_process(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit")
    written = _events(5)
    for event in written:
        spool.put(event)
    del spool  # as kill -9 would leave it: nothing was flushed by a clean exit
    again = AuditSpool(tmp_path / "audit")
    assert again.peek() == written
    platform = _Platform()
    assert asyncio.run(again.flush(platform.send)) is True
    assert platform.taken == written
    assert AuditSpool(tmp_path / "audit").peek() == []  # delivered once, not again


def test_a_refused_batch_stays_and_goes_later_in_order(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit", batch=3)
    for event in _events(7):
        spool.put(event)
    platform = _Platform()
    calls = 0

    async def flaky(batch: list[Event]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("tunnel down")
        await platform.send(batch)

    assert asyncio.run(spool.flush(flaky)) is False
    assert _commands(platform.taken) == ["cmd-0", "cmd-1", "cmd-2"]
    restarted = AuditSpool(tmp_path / "audit", batch=3)  # what was taken is not sent again
    assert _commands(restarted.peek()) == ["cmd-3", "cmd-4", "cmd-5"]
    assert asyncio.run(restarted.flush(platform.send)) is True
    assert _commands(platform.taken) == [f"cmd-{n}" for n in range(7)]


def test_the_directory_and_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)  # noqa: S103 - as an older agent left it
    spool = AuditSpool(directory)
    spool.put(_events(1)[0])
    assert _mode(directory) == 0o700
    files = list(directory.iterdir())
    assert files
    assert all(_mode(f) == 0o600 for f in files)


def test_a_torn_last_line_is_dropped_and_the_rest_delivered(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit")
    for event in _events(2):
        spool.put(event)
    [segment] = [f for f in (tmp_path / "audit").iterdir() if f.suffix == ".jsonl"]
    with segment.open("ab") as out:
        out.write(b'{"type": "exec", "fie')  # the agent died inside a write
    again = AuditSpool(tmp_path / "audit")
    again.put(_events(1, start=2)[0])
    assert _commands(again.peek()) == ["cmd-0", "cmd-1", "cmd-2"]


def test_segments_rotate_and_delivered_ones_are_removed(tmp_path: Path) -> None:
    spool = AuditSpool(tmp_path / "audit", segment_bytes=1000, batch=4)
    for event in _events(40):
        spool.put(event)
    segments = sorted(f for f in (tmp_path / "audit").iterdir() if f.suffix == ".jsonl")
    assert len(segments) > 3
    platform = _Platform()
    assert asyncio.run(spool.flush(platform.send)) is True
    assert _commands(platform.taken) == [f"cmd-{n}" for n in range(40)]
    left = [f for f in (tmp_path / "audit").iterdir() if f.suffix == ".jsonl"]
    assert sum(f.stat().st_size for f in left) == 0
    spool.put(_events(1, start=40)[0])  # and it goes on writing after a full drain
    assert _commands(AuditSpool(tmp_path / "audit").peek()) == ["cmd-40"]


def test_a_full_spool_keeps_what_it_has_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = AuditSpool(tmp_path / "audit", limit_bytes=2000, segment_bytes=500)
    with caplog.at_level(logging.ERROR):
        for event in _events(50):
            spool.put(event)
    assert spool.dropped > 0
    kept = AuditSpool(tmp_path / "audit", batch=1000).peek()
    assert _commands(kept) == [f"cmd-{n}" for n in range(len(kept))]  # the oldest are kept
    assert sum(f.stat().st_size for f in (tmp_path / "audit").iterdir()) <= 2000 + 1000
    full = [r for r in caplog.records if "audit spool is full" in r.getMessage()]
    assert len(full) == 1  # one line per overflow, not one per event
    platform = _Platform()
    assert asyncio.run(spool.flush(platform.send)) is True
    spool.put(_events(1, start=99)[0])  # room again: taken
    assert _commands(spool.peek()) == ["cmd-99"]


def test_node_events_carry_unique_stable_ids() -> None:
    events = _events(100)
    ids = [e["fields"]["event_id"] for e in events]
    assert len(set(ids)) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def _sftp(count: int, start: int = 0) -> list[Event]:
    return [
        audit.event("sftp", action="rename", path=f"/p-{n}") for n in range(start, start + count)
    ]


def test_lifecycle_events_go_before_a_backlog_of_transfer_events(tmp_path: Path) -> None:
    """One user's flood of sftp events must not delay another session's story: the lifecycle
    lane is sent first, whatever waits in the other."""
    lanes = AuditLanes(tmp_path / "audit", batch=10)
    for event in _sftp(500):
        lanes.put(event)
    story = [audit.event(kind, session_id="other") for kind in ("session.start", "exec")]
    for event in story:
        lanes.put(event)
    batches: list[list[Event]] = []

    async def slow(batch: list[Event]) -> None:
        if len(batches) == 3:  # the platform takes three batches, then the tunnel drops
            raise OSError("tunnel down")
        batches.append(batch)

    assert asyncio.run(lanes.flush(slow)) is False
    assert [e["type"] for e in batches[0]] == ["session.start", "exec"]
    lanes.put(audit.event("session.end", session_id="other"))
    platform = _Platform()
    assert asyncio.run(lanes.flush(platform.send)) is True
    assert platform.taken[0]["type"] == "session.end"
    taken = [e["fields"]["path"] for b in batches[1:] for e in b] + [
        e["fields"]["path"] for e in platform.taken[1:]
    ]
    assert taken == [f"/p-{n}" for n in range(500)]  # each lane keeps its order, none lost


def test_a_full_transfer_lane_never_drops_lifecycle_events_and_says_what_it_dropped(
    tmp_path: Path,
) -> None:
    lanes = AuditLanes(tmp_path / "audit", limit_bytes=5000, segment_bytes=1000, batch=1000)
    for event in _sftp(200):
        lanes.put(event)
    assert lanes.dropped > 0
    dropped = lanes.dropped
    lanes.put(audit.event("session.start", session_id="other"))
    lanes.put(audit.event("session.end", session_id="other"))
    platform = _Platform()
    assert asyncio.run(lanes.flush(platform.send)) is True
    first = platform.taken[:3]
    assert [e["type"] for e in first] == ["session.start", "session.end", "audit.dropped"]
    report = first[2]
    assert report["outcome"] == "W"
    assert report["fields"]["dropped"] == dropped
    assert "spool" in report["fields"]["error"]
    # reported once: a later flush says nothing more until more is dropped
    platform.taken.clear()
    lanes.put(_sftp(1, start=999)[0])
    assert asyncio.run(lanes.flush(platform.send)) is True
    assert [e["type"] for e in platform.taken] == ["sftp"]


def test_both_lanes_outlive_the_process(tmp_path: Path) -> None:
    lanes = AuditLanes(tmp_path / "audit")
    lanes.put(_sftp(1)[0])
    lanes.put(audit.event("exec", command="kept", session_id="s"))
    del lanes  # as kill -9 would leave it
    platform = _Platform()
    assert asyncio.run(AuditLanes(tmp_path / "audit").flush(platform.send)) is True
    assert [e["type"] for e in platform.taken] == ["exec", "sftp"]
    assert asyncio.run(AuditLanes(tmp_path / "audit").flush(platform.send)) is True
    assert len(platform.taken) == 2  # delivered once

"""The node's recording spool: members written on the session's path are the parts, whole;
what a crash leaves is recovered to the last whole frame; parts stay within their limits."""

import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jumpgate.node_agent.recording import Recorder, SessionSpool, Spool
from jumpgate.node_agent.recording_members import Member
from jumpgate.protocol import recording
from jumpgate.protocol.recording import RecordingMeta


def _spool(tmp_path: Path) -> SessionSpool:
    meta = RecordingMeta(session_id=str(uuid.uuid4()), kind="shell", started=datetime.now(UTC))
    return Spool(tmp_path / "recordings").create(meta)


def _outputs(parts: list[bytes]) -> bytes:
    """The output bytes the parts hold, each part decoded on its own (as the platform does)."""
    out = bytearray()
    for part in parts:
        for kind, _, payload in recording.frames(recording.decompress(part)):
            if kind == recording.OUTPUT:
                out += payload
    return bytes(out)


def _sealed(spool: SessionSpool, members: list[Member]) -> list[bytes]:
    """The parts the members became, with bytes no longer held read back from the spool."""
    return [data or spool.part_bytes(part) for part, data in spool.seal(members)]


def test_members_are_the_parts_and_hold_every_byte(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    zeros = bytes(recording.PART_RAW_BYTES // 3)  # parts are cut by size within a write too
    chunks = [os.urandom(50_000), zeros, b"x", b"hello\r\n" * 1000]
    for chunk in chunks * 3:
        assert recorder.output(chunk)
    recorder.resize(120, 40)
    recorder.close(0)
    parts = _sealed(spool, recorder.take())
    assert len(parts) > 1
    assert _outputs(parts) == b"".join(chunks * 3)
    assert b"".join(parts) == spool.frames.read_bytes()  # the spool is the parts, laid end to end
    assert not spool.pending()
    assert spool.end is not None
    assert spool.end.exit_code == 0
    for part, info in zip(parts, spool.state.parts, strict=True):
        assert len(part) <= recording.MAX_PART_BYTES
        assert len(recording.decompress(part)) <= recording.PART_RAW_BYTES
        assert spool.part_bytes(info) == part
    assert recording.check_chain(spool.session_id, [p.info for p in spool.state.parts]) is None


@pytest.mark.parametrize(
    ("chunk", "count"),
    [(b"k", 400_000), (None, 12)],  # keystroke echo (a sync flush per byte); incompressible MiBs
)
def test_parts_stay_within_limits(tmp_path: Path, chunk: bytes | None, count: int) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    for _ in range(count):
        recorder.output(chunk if chunk is not None else os.urandom(1_500_000))
    recorder.close(0)
    for part in _sealed(spool, recorder.take()):
        assert len(part) <= recording.MAX_PART_BYTES
        assert len(recording.decompress(part)) <= recording.PART_RAW_BYTES


def test_with_nobody_taking_parts_none_is_held_in_memory(tmp_path: Path) -> None:
    """A long tunnel outage must not keep a session's output in the agent's memory: the
    uploader reads finished parts back from the spool (issue 14: 24 MB per busy session)."""
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    written = [os.urandom(64) + bytes(recording.PART_RAW_BYTES - 1024) for _ in range(7)]
    for chunk in written:
        recorder.output(chunk)
    recorder.close(0)
    members = recorder.take()
    assert len(members) == 7
    assert [m.data for m in members] == [None] * 7
    assert _outputs(_sealed(spool, members)) == b"".join(written)  # the rest read back


def test_recording_a_busy_session_holds_at_most_a_chunk_in_memory(tmp_path: Path) -> None:
    """Incompressible output, many parts: what the recorder allocates stays near the size
    of the chunk it is given, whatever the number of parts (issue 14: at most 8 MB/session)."""
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    chunk = os.urandom(64 * 1024)
    tracemalloc.start()
    try:
        for _ in range(3 * recording.MAX_PART_BYTES // len(chunk)):
            recorder.output(chunk)
        recorder.cut()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    recorder.close(0)
    assert len(recorder.take()) >= 3
    assert peak < 1024 * 1024, peak


def test_a_member_is_due_when_quiet_or_old(tmp_path: Path) -> None:
    recorder = Recorder(_spool(tmp_path))
    assert not recorder.due(time.monotonic() + 3600)  # nothing written: nothing to cut
    recorder.output(b"x")
    now = time.monotonic()
    assert not recorder.due(now)
    assert recorder.due(now + recording.FLUSH_SECONDS)  # quiet
    for _ in range(3):  # busy, but a live tail must not wait for the part to fill
        recorder.output(b"y")
    assert recorder.due(now + recording.PART_SECONDS)
    recorder.close(0)


def test_a_quiet_session_is_cut_into_a_part(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    recorder.output(b"$ ")
    assert recorder.take() == []
    assert spool.pending()
    recorder.cut()
    parts = _sealed(spool, recorder.take())
    assert _outputs(parts) == b"$ "
    assert not spool.pending()
    recorder.output(b"ls\r\n")
    recorder.close(0)
    assert _outputs(_sealed(spool, recorder.take())) == b"ls\r\n"


def test_after_kill_9_the_open_member_is_recovered_to_the_last_byte(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    written = [os.urandom(1_000_000) + bytes(recording.PART_RAW_BYTES // 3) for _ in range(5)]
    for chunk in written:
        recorder.output(chunk)
    finished = recorder.take()  # the uploader had these in memory only
    assert finished
    # The agent dies: no close, no state saved. A new agent finds the directory.
    again = SessionSpool(spool.directory)
    members = again.recover()
    assert [m.sha256 for m in members[: len(finished)]] == [m.sha256 for m in finished]
    parts = _sealed(again, members)
    assert _outputs(parts) == b"".join(written)
    assert all(len(part) <= recording.MAX_PART_BYTES for part in parts)
    assert not again.pending()
    assert again.recover() == []


def test_a_torn_write_keeps_the_whole_frames_before_it(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    recorder.output(b"first line\r\n")
    recorder.output(os.urandom(20_000))
    size = spool.size()
    with spool.frames.open("r+b") as frames:
        frames.truncate(size - 7000)  # the last write reached the disk only in part
    members = SessionSpool(spool.directory).recover()
    assert _outputs(_sealed(SessionSpool(spool.directory), members)) == b"first line\r\n"


def test_garbage_after_the_last_part_is_dropped(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    recorder.output(b"kept")
    recorder.close(0)
    parts = _sealed(spool, recorder.take())
    with spool.frames.open("ab") as frames:
        frames.write(b"\x1f\x8bnot a member")
    assert spool.recover() == []
    assert spool.frames.read_bytes() == b"".join(parts)


def test_a_changed_spooled_part_is_refused(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    recorder = Recorder(spool)
    recorder.output(b"secret")
    recorder.close(0)
    ((part, _),) = spool.seal(recorder.take())
    data = bytearray(spool.frames.read_bytes())
    data[-9] ^= 1
    spool.frames.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="part 1 no longer matches"):
        spool.part_bytes(part)

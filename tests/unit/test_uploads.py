"""The agent's uploader against the proxy's end of the recording channel, played here by a
small peer that speaks the channel's JSON lines: a refused session is held back with backoff
rather than retried on every pass, and is sent as soon as its hold ends and the platform
takes it. (The real channel, proxy and store are in tests/e2e/test_recordings.py.)"""

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent import uploads
from jumpgate.node_agent.recording import Recorder, Spool
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol.outbox import Outbox
from jumpgate.protocol.recording import RecordingMeta


class Peer:
    """The proxy's end: answers each call, refusing every session while ``refusing``."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        self.refusing = True
        self.calls: list[dict[str, Any]] = []
        self._buffer = b""
        self._payload = 0  # bytes of a part still to come after its line

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        return self.reader, self

    def write(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._payload:
                taken = min(self._payload, len(self._buffer))
                self._buffer, self._payload = self._buffer[taken:], self._payload - taken
                if self._payload:
                    return
                continue
            line, found, rest = self._buffer.partition(b"\n")
            if not found:
                return
            self._buffer = rest
            call = json.loads(line)
            self.calls.append(call)
            if call["op"] == "part":
                self._payload = call["size"]
            self.reader.feed_data(json.dumps(self._answer(call)).encode() + b"\n")

    def _answer(self, call: dict[str, Any]) -> dict[str, Any]:
        if call["op"] == "hello":
            return {"mode": "node", "record_exec": True}
        if self.refusing:
            return {"error": "the recordings store is unavailable"}
        return {"parts": 0} if call["op"] == "status" else {}

    def close(self) -> None:
        """The uploader closing its channel."""

    def count(self, op: str) -> int:
        return sum(1 for call in self.calls if call["op"] == op)


def test_a_refused_session_is_held_back_with_backoff_then_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path / "recordings")
    meta = RecordingMeta(session_id=str(uuid.uuid4()), kind="shell", started=datetime.now(UTC))
    recorder = Recorder(spool.create(meta))
    recorder.output(b"hello\r\n" * 100)
    recorder.close(0)
    monkeypatch.setattr(uploads, "PASS_SECONDS", 0.01)  # a pass every 10 ms
    monkeypatch.setattr(uploads, "backoff", lambda refusals: 0.2 * 2**refusals)
    uploader = Uploader(spool, Outbox())

    async def scenario() -> Peer:
        peer = Peer()  # its reader belongs to this loop
        task = asyncio.create_task(uploader._serve(peer))  # type: ignore[arg-type]
        await asyncio.sleep(0.5)  # about 50 passes; tries at 0, 0.2 s and 0.6 s
        refused = peer.count("status")
        peer.refusing = False
        deadline = time.monotonic() + 5
        while list(spool.sessions()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        assert refused == 2, peer.calls
        assert not list(spool.sessions())  # taken once its hold ended, then deleted
        return peer

    peer = asyncio.run(scenario())
    assert [c["op"] for c in peer.calls][-3:] == ["status", "part", "complete"]


class _SwallowingTunnel:
    """A tunnel whose channel opening turns a cancellation into asyncssh's own error, as
    asyncssh does when the connection closes under it."""

    def __init__(self) -> None:
        self.opened = 0

    def is_closed(self) -> bool:
        return False

    async def open_connection(self, *_: Any) -> Any:
        self.opened += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise asyncssh.ChannelOpenError(2, "SSH connection closed") from None


def test_a_cancelled_uploader_stops_even_when_asyncssh_swallows_the_cancel(
    tmp_path: Path,
) -> None:
    """It looped for ever, every 5 s, and held the agent's exit on SIGTERM (asyncio.run waits
    for every cancelled task)."""

    async def scenario() -> None:
        tunnel = _SwallowingTunnel()
        uploader = Uploader(Spool(tmp_path / "recordings"), Outbox())
        task = asyncio.create_task(uploader.run(tunnel))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
        assert tunnel.opened == 1

    asyncio.run(scenario())

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

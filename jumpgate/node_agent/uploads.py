"""Streaming spooled recordings to the platform, through the tunnel only.

The agent opens one channel to ``ports.RECORDINGS`` inside its tunnel and says, in JSON lines
(a part's bytes follow its line):

- ``hello``: the tenant's recording settings come back;
- ``status``: for a session, what the store already has (so a restarted agent or proxy
  resumes where the store stopped, not where the agent thinks it did);
- ``part``: one sealed part with its digest and chained digest;
- ``complete``: every part is stored and the session has ended; the platform signs the
  manifest, and only then does the agent delete its spool;
- ``alive``: a long quiet session is still going (so the platform does not close it).

Anything that fails (tunnel down, proxy restarting, store unreachable) leaves the spool as it
is; the next pass tries again. Nothing is ever deleted because it could not be sent. A
session the platform refuses (its store is failing, say) is held back with backoff, 1 s
doubling to 30 s, so a long outage costs a few calls and log lines a minute, not one a pass.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent.recording import Recorder, SessionSpool, Spool, interrupted_end
from jumpgate.node_agent.retry import backoff, stop_if_cancelled
from jumpgate.protocol import ports, recording
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.recording import RecordingMode
from jumpgate.protocol.recording_messages import (
    AliveRequest,
    CompleteRequest,
    PartRequest,
    SettingsRequest,
    StatusAnswer,
    StatusRequest,
)
from jumpgate.protocol.tunnel import LISTEN_HOST, MAX_LINE_BYTES

logger = logging.getLogger(__name__)

PASS_SECONDS = 1.0
SETTINGS_SECONDS = 10.0
"""How soon a node follows a change of the tenant's recording mode."""
ALIVE_SECONDS = 600.0
CALL_SECONDS = 60.0


Request = SettingsRequest | StatusRequest | PartRequest | CompleteRequest | AliveRequest


class UploadRefused(Exception):
    """The platform answered a request with an error; ``str()`` says why."""


class _Channel:
    def __init__(self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]):
        self._reader = reader
        self._writer = writer

    async def call(self, message: Request, payload: bytes = b"") -> dict[str, Any]:
        self._writer.write(message.line())
        if payload:
            self._writer.write(payload)
        line = await asyncio.wait_for(self._reader.readline(), CALL_SECONDS)
        if not line.endswith(b"\n") or len(line) > MAX_LINE_BYTES:
            raise ConnectionError("the recording channel closed")
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ConnectionError("the proxy answered nonsense on the recording channel")
        if "error" in answer:
            raise UploadRefused(str(answer["error"]))
        return answer

    def close(self) -> None:
        self._writer.close()


class Uploader:
    """Sends every spooled recording for as long as a tunnel is up."""

    def __init__(self, spool: Spool, audit: events.EventSink) -> None:
        self.spool = spool
        self.audit = audit
        self.recorders: dict[str, Recorder] = {}  # sessions recorded by this process, not drained
        self.mode = RecordingMode.NODE
        self.record_exec = True
        self.parts_sent = 0
        self._wake = asyncio.Event()
        self._confirmed: set[str] = set()  # sessions whose store state this channel has asked
        self._contact: dict[str, float] = {}
        self._spools: dict[str, SessionSpool] = {}  # as last seen, so state is read once
        self._held: dict[str, tuple[int, float]] = {}  # refused: refusals, when to try again

    def wake(self) -> None:
        self._wake.set()

    def _settings(self, answer: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError):
            self.mode = RecordingMode(str(answer.get("mode", self.mode)))
        self.record_exec = bool(answer.get("record_exec", True))

    async def run(self, conn: asyncssh.SSHClientConnection) -> None:
        """Upload until the tunnel goes; errors other than the tunnel's are logged and retried."""
        while True:
            try:
                await self._serve(conn)
            except (asyncssh.Error, OSError, ConnectionError, TimeoutError, ValueError) as exc:
                stop_if_cancelled()
                if conn.is_closed():
                    return  # the tunnel is gone: the next one starts its own uploader
                logger.info("recording upload paused", extra={"reason": str(exc) or repr(exc)})
            await asyncio.sleep(5)

    async def _serve(self, conn: asyncssh.SSHClientConnection) -> None:
        reader, writer = await conn.open_connection(LISTEN_HOST, ports.RECORDINGS)
        channel = _Channel(reader, writer)
        self._confirmed.clear()
        try:
            self._settings(await channel.call(SettingsRequest()))
            asked = time.monotonic()
            while True:
                self._wake.clear()
                known, self._spools = self._spools, {}
                for spool in list(self.spool.sessions()):
                    sid = spool.session_id
                    spool = self._spools[sid] = known.get(sid, spool)
                    refusals, until = self._held.get(sid, (0, 0.0))
                    if time.monotonic() < until:
                        continue
                    try:
                        await self._advance(channel, spool)
                    except UploadRefused as exc:
                        wait = backoff(refusals)
                        self._held[sid] = (refusals + 1, time.monotonic() + wait)
                        logger.warning(
                            "recording not taken yet, will retry",
                            extra={
                                "session_id": sid,
                                "reason": str(exc),
                                "retry_in": round(wait, 1),
                            },
                        )
                    else:
                        self._held.pop(sid, None)
                self._held = {sid: held for sid, held in self._held.items() if sid in self._spools}
                if time.monotonic() - asked > SETTINGS_SECONDS:
                    self._settings(await channel.call(SettingsRequest()))
                    asked = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PASS_SECONDS)
                # Python 3.11's wait_for returns the result of a wait that completed as its
                # task was cancelled, dropping the cancel: the tunnel's TaskGroup would then
                # wait for this loop for ever
                stop_if_cancelled()
        finally:
            channel.close()

    async def _advance(self, channel: _Channel, spool: SessionSpool) -> None:
        sid = spool.session_id
        loop = asyncio.get_running_loop()
        end = spool.end
        if end is None and sid not in self.recorders:
            end = interrupted_end(spool)
            spool.finish(end)
            meta = spool.meta
            self.audit.put(
                events.event(
                    EventType.SESSION_END,
                    outcome="W",
                    user=meta.user,
                    login=meta.login,
                    session_id=sid,
                    reason="the agent stopped during the session",
                )
            )
        recorder = self.recorders.get(sid)
        if recorder is not None:
            closed = recorder.closed
            if not closed and recorder.due(time.monotonic()):
                recorder.cut()
            members = recorder.take()
            if closed:  # its last member was finished before it closed
                del self.recorders[sid]
        else:
            members = await loop.run_in_executor(None, spool.recover)
        fresh = {part.info.index: data for part, data in spool.seal(members) if data}
        state = spool.state
        if sid not in self._confirmed:
            status = await channel.call(
                StatusRequest(session_id=sid, meta=spool.meta.model_dump(mode="json"))
            )
            spool.acked = min(StatusAnswer.model_validate(status).parts, len(state.parts))
            self._confirmed.add(sid)
        for part in state.parts[spool.acked :]:
            data = fresh.get(part.info.index)
            if data is None:
                data = await loop.run_in_executor(None, spool.part_bytes, part)
            previous = (
                state.parts[part.info.index - 2].info.chain
                if part.info.index > 1
                else recording.genesis(sid)
            )
            await channel.call(
                PartRequest(session_id=sid, previous=previous, **part.info.model_dump()), data
            )
            spool.acked = part.info.index
            self.parts_sent += 1
            self._contact[sid] = time.monotonic()
        if (
            end is not None
            and sid not in self.recorders
            and not spool.pending()
            and spool.acked == len(state.parts)
        ):
            await channel.call(CompleteRequest(session_id=sid, parts=len(state.parts), end=end))
            spool.remove()
            self._confirmed.discard(sid)
            self._contact.pop(sid, None)
            logger.info("recording uploaded", extra={"session_id": sid})
        elif time.monotonic() - self._contact.setdefault(sid, time.monotonic()) > ALIVE_SECONDS:
            await channel.call(AliveRequest(session_id=sid))
            self._contact[sid] = time.monotonic()

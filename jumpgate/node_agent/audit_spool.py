"""The node's audit events waiting for the platform, on disk: they outlive a tunnel outage, a
restart and ``kill -9`` of the agent (docs/decisions/0016-node-audit-spool.md).

``<data_dir>/audit/`` (0700) holds append-only segments ``<n>.jsonl`` (0600), one event per
line, each line written with one ``write`` and fsync'd before ``put`` returns, and ``acked``:
how far the platform has taken them (segment and offset), replaced atomically after every
batch it accepted. A segment wholly behind ``acked`` is deleted; when everything is taken the
last segment is emptied. A line torn by a crash is cut off when the spool is opened.

Delivery is at least once: a crash between a batch being taken and ``acked`` being written
sends that batch again after the restart. Every event carries its own ``event_id`` (made once,
when the event is, see ``audit.event``), so the copies in the audit log can be told apart.

The spool is bounded (``limit_bytes``): when it is full, new events are dropped and counted,
with one error line per overflow; what is already on disk is never dropped unsent. The agent
keeps two (``audit_lanes.AuditLanes``): a session's story in one, sent first, and transfer
events in the other, so one user's flood of transfer events neither delays nor crowds out
anyone's story, and what either drops is reported to the platform as ``audit.dropped``.

A batch the proxy refuses (``audit.AuditRefused``: it will not take it sent again, unlike a
lost tunnel or an unreachable platform) never holds up the events behind it: the batch is sent
again one event at a time, and each event still refused is moved to ``dead-letter.jsonl``
(0600, bounded) with one error line, and delivery goes on.
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jumpgate.node_agent.audit import AuditRefused
from jumpgate.node_agent.retry import stop_if_cancelled

logger = logging.getLogger(__name__)

Event = dict[str, Any]
Send = Callable[[list[Event]], Awaitable[None]]

LIMIT_BYTES = 64 * 1024 * 1024
"""About 200,000 events: days of a busy node's sessions with the platform out of reach."""
SEGMENT_BYTES = 1024 * 1024
BATCH = 100  # the proxy takes at most 100 events a batch (edge_proxy.tunnel_front.MAX_AUDIT_BATCH)
_SUFFIX = ".jsonl"
_ACKED = "acked"
DEAD_LETTER = "dead-letter.jsonl"
DEAD_LETTER_BYTES = 8 * 1024 * 1024
"""Events the proxy refused, kept for the node's admin to read; beyond this they are dropped."""

Position = tuple[int, int]
"""(segment number, byte offset in it)."""


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditSpool:
    """Events put on the session's path, sent in batches by ``deliver`` while a tunnel is up.

    ``put`` never raises: an event that cannot be written is logged and counted in
    ``dropped``. The interface is ``protocol.outbox.Outbox``'s, so the delivery over the
    tunnel (``audit.sender``) is the same.
    """

    def __init__(
        self,
        directory: Path,
        *,
        limit_bytes: int = LIMIT_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
        batch: int = BATCH,
        retry: float = 5.0,
    ) -> None:
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.segment_bytes = segment_bytes
        self.batch = batch
        self.retry = retry
        self.dropped = 0
        self.refused = 0  # events the proxy refused, set aside in ``DEAD_LETTER``
        self._full = False
        self._limit = 0  # events a batch may hold (0: ``batch``); 1 after a refused batch
        self._refused_until: Position | None = None  # where one-at-a-time sending ends
        self._ready = asyncio.Event()
        self._sending = asyncio.Lock()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(directory, 0o700)  # an existing directory is tightened too
        self._segments = self._existing()
        self._position = self._acked()
        self._repair_tail()
        if not self._segments:
            self._segments = [self._position[0]]
        self._fd = self._open(self._segments[-1])
        self._size = os.fstat(self._fd).st_size
        if self.pending_bytes:
            self._ready.set()

    # -- on disk -----------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SUFFIX}"

    def _existing(self) -> list[int]:
        numbers = []
        for entry in self.directory.iterdir():
            if entry.suffix == _SUFFIX and entry.stem.isdigit():
                numbers.append(int(entry.stem))
        return sorted(numbers)

    def _acked(self) -> Position:
        """Where delivery stopped; segments wholly before it are leftovers and removed."""
        try:
            data = json.loads((self.directory / _ACKED).read_bytes())
            position = (int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            position = (self._segments[0] if self._segments else 1, 0)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "audit spool position unreadable: sending the whole spool again",
                extra={"reason": str(exc)},
            )
            position = (self._segments[0] if self._segments else 1, 0)
        for number in [n for n in self._segments if n < position[0]]:
            self._path(number).unlink(missing_ok=True)
            self._segments.remove(number)
        if self._segments and position[0] not in self._segments:
            position = (self._segments[0], 0)
        if self._segments:
            size = self._path(position[0]).stat().st_size
            position = (position[0], min(position[1], size))
        return position

    def _repair_tail(self) -> None:
        """Cut a line the agent was writing when it died (only the last segment is written)."""
        if not self._segments:
            return
        path = self._path(self._segments[-1])
        data = path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            logger.warning(
                "audit spool ended in a torn event; cut off",
                extra={"segment": path.name, "bytes": len(data) - whole},
            )
            os.truncate(path, whole)

    def _open(self, number: int) -> int:
        path = self._path(number)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if created:
            _fsync_directory(self.directory)
        return fd

    def _rotate(self) -> None:
        os.close(self._fd)
        number = self._segments[-1] + 1
        self._fd = self._open(number)
        self._segments.append(number)
        self._size = 0

    def _save_position(self, position: Position) -> None:
        temporary = self.directory / f"{_ACKED}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({"segment": position[0], "offset": position[1]}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.directory / _ACKED)
        _fsync_directory(self.directory)

    @property
    def pending_bytes(self) -> int:
        """Bytes of events not yet taken by the platform."""
        total = 0
        for number in self._segments:
            if number >= self._position[0]:
                with contextlib.suppress(FileNotFoundError):
                    total += self._path(number).stat().st_size
        return total - self._position[1]

    # -- the session's side ------------------------------------------------------------------

    def put(self, event: Event) -> bool:
        """Write ``event`` durably before returning; drop it (counted, logged) if it cannot be.
        False when it was dropped."""
        line = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        if self.pending_bytes + len(line) > self.limit_bytes:
            self.dropped += 1
            if not self._full:
                self._full = True
                logger.error(
                    "audit spool is full: new node events are dropped until the platform "
                    "takes the backlog (is the tunnel up?)",
                    extra={"directory": str(self.directory), "limit_bytes": self.limit_bytes},
                )
            return False
        if self._full:
            self._full = False
            logger.warning("audit spool has room again", extra={"dropped": self.dropped})
        try:
            if self._size and self._size + len(line) > self.segment_bytes:
                self._rotate()
            written = os.write(self._fd, line)
            if written != len(line):  # never for a regular file short of a full disk
                raise OSError(f"short write to the audit spool ({written} of {len(line)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            self.dropped += 1
            logger.error(
                "audit event not spooled", extra={"reason": str(exc), "type": event.get("type")}
            )
            return False
        self._size += len(line)
        self._ready.set()
        return True

    # -- delivery ----------------------------------------------------------------------------

    def _dead_letter(self, events: list[Event], reason: str) -> None:
        """Set aside events the proxy refused: one error line, and the events in a file."""
        path = self.directory / DEAD_LETTER
        lines = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
        kept = False
        try:
            size = path.stat().st_size if path.exists() else 0
            if size + len(lines) <= DEAD_LETTER_BYTES:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, lines)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                kept = True
        except OSError as exc:
            reason = f"{reason}; not kept: {exc}"
        self.refused += len(events)
        logger.error(
            "audit events refused by the proxy: set aside, delivery goes on",
            extra={
                "events": len(events),
                "types": sorted({str(e.get("type")) for e in events}),
                "reason": reason[:300],
                "file": str(path) if kept else None,
            },
        )

    def _read(self, limit: int = 0) -> tuple[list[Event], Position]:
        """The next batch (of at most ``limit`` events, or ``batch``) from the delivery
        position, and where it ends."""
        limit = limit or self.batch
        events: list[Event] = []
        number, offset = self._position
        for segment in [n for n in self._segments if n >= number]:
            if segment != number:
                offset = 0
            try:
                source = self._path(segment).open("rb")
            except FileNotFoundError:
                continue
            with source:
                source.seek(offset)
                while len(events) < limit:
                    line = source.readline()
                    if not line.endswith(b"\n"):
                        break  # the end, or a line still being written
                    offset += len(line)
                    try:
                        event = json.loads(line)
                    except ValueError:
                        logger.warning("audit spool line unreadable; skipped")
                        continue
                    if isinstance(event, dict):
                        events.append(event)
            number = segment
            if len(events) >= limit:
                break
        return events, (number, offset)

    def peek(self) -> list[Event]:
        """The next batch, oldest first, still waiting."""
        return self._read()[0]

    def _acknowledge(self, position: Position) -> None:
        number, offset = position
        if number == self._segments[-1] and offset == self._size:
            # Everything is taken: empty the last segment rather than keep it growing.
            os.ftruncate(self._fd, 0)
            self._size = 0
            position = (number, 0)
        self._save_position(position)
        self._position = position
        for old in [n for n in self._segments if n < number]:
            self._path(old).unlink(missing_ok=True)
            self._segments.remove(old)

    async def send_batch(self, send: Send) -> bool | None:
        """Send the next batch: True once it is taken (or set aside), False when the send
        failed (kept), None when nothing is waiting.

        A refused batch is sent again one event at a time up to where it ended, so that only
        the events refused on their own are set aside (``_dead_letter``)."""
        async with self._sending:
            while True:
                events, end = self._read(self._limit)
                if end == self._position:
                    return None
                if events:
                    try:
                        await send(events)
                    except AuditRefused as exc:
                        if len(events) > 1:
                            self._limit, self._refused_until = 1, end
                            continue
                        self._dead_letter(events, str(exc))
                    except Exception as exc:
                        logger.warning(
                            "audit events not sent yet, will retry",
                            extra={"reason": str(exc)[:300]},
                        )
                        return False
                self._acknowledge(end)
                if self._refused_until is not None and end >= self._refused_until:
                    self._limit, self._refused_until = 0, None
                return True

    async def flush(self, send: Send) -> bool:
        """Send everything now; False (and the rest kept) when a send fails."""
        while True:
            sent = await self.send_batch(send)
            if sent is None:
                return True
            if not sent:
                return False

    async def deliver(self, send: Send, *, linger: float = 0.0) -> None:
        """Send batches for as long as the task runs; ``linger`` lets a batch fill up."""
        await deliver(self.flush, self._ready, self.retry, send, linger)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


async def deliver(
    flush: Callable[[Send], Awaitable[bool]],
    ready: asyncio.Event,
    retry: float,
    send: Send,
    linger: float,
) -> None:
    """Flush whenever ``ready`` is set, after ``linger``; after a failed send, again in
    ``retry`` seconds. Ends only when its task is cancelled."""
    while True:
        await ready.wait()
        await asyncio.sleep(linger)
        ready.clear()
        if not await flush(send):
            stop_if_cancelled()
            ready.set()  # try again after a pause
            await asyncio.sleep(retry)

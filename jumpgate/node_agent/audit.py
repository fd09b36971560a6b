"""The node's own audit events (exec with its exit code, shell sessions), sent to the proxy.

The agent reaches the platform only through its tunnel: events wait on disk in an
``audit_spool.AuditSpool`` and are sent in batches (``AuditBatch`` messages on the tunnel's
control channel, ``tunnel_control``); the proxy stamps them with the tunnel's tenant and node,
which the node cannot choose. Each event carries an ``event_id`` made once, so a batch sent
again after a crash (delivery is at least once) can be told from new events.
"""

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from jumpgate.protocol.audit import EventType
from jumpgate.protocol.tunnel_messages import (
    MAX_MESSAGE_BYTES,
    Ack,
    AuditBatch,
    Refusal,
    Renewed,
    RenewRequest,
    Tempfail,
)

Event = dict[str, Any]

FIELD_BYTES = 2048
"""The most a string field of a node event takes, JSON-encoded: a path, command or error a
user chose can be any length, and the event must stay one line the proxy takes."""
EVENT_BYTES = 12 * 1024
"""The most a whole event takes, JSON-encoded: below the tunnel's line limit (16 KiB)."""
SMALL_FIELD_BYTES = 256
"""What each string field is cut to when an event is still over ``EVENT_BYTES``."""
LIFECYCLE = frozenset(
    t.value
    for t in (
        EventType.SESSION_START,
        EventType.EXEC,
        EventType.SESSION_END,
        EventType.SESSION_OVER_BUDGET,
        EventType.AUDIT_DROPPED,
    )
)
"""A session's story, and what says events were lost: never counted against a session's
budget (``audit_budget``), and sent ahead of transfer events (``audit_lanes.AuditLanes``)."""


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` whose JSON encoding takes at most ``limit`` bytes."""
    size = len(json.dumps(text))
    while size > limit:
        text = text[: max(0, len(text) * limit // size - 1)]
        size = len(json.dumps(text))
    return text


def _bounded(fields: dict[str, Any], limit: int) -> bool:
    """Cut every string field of ``fields`` to ``limit`` JSON bytes; True if one was cut."""
    cut = False
    for name, value in fields.items():
        if isinstance(value, str) and len(value) * 6 + 2 > limit:
            short = _cut(value, limit)
            if short != value:
                fields[name], cut = short, True
    return cut


def event(event_type: str, *, outcome: str = "I", **fields: Any) -> Event:
    """One event as the node reports it; the proxy adds tenant and node.

    Every string field is bounded (``FIELD_BYTES``, and ``EVENT_BYTES`` for the event); an
    event that was cut says ``truncated: true``. An unbounded event would be refused by the
    proxy and, before decision 0016's amendment, held up the node's whole spool behind it.
    """
    made = {**fields, "event_id": uuid.uuid4().hex}
    cut = _bounded(made, FIELD_BYTES)
    if len(json.dumps(made)) > EVENT_BYTES:
        cut = _bounded(made, SMALL_FIELD_BYTES) or cut
    if cut:
        made["truncated"] = True
    return {
        "type": event_type,
        "outcome": outcome,
        "time": datetime.now(UTC).isoformat(),
        "fields": made,
    }


class Resizes:
    """A session's window changes, audited at most once per ``interval`` (the last size
    wins); ``close`` writes a size still waiting, so the final size is always audited.

    A client can send thousands of window changes a second, and each audited event is a
    line fsync'd to the spool and a row in the audit log.
    """

    def __init__(
        self,
        write: Callable[[int, int], None],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        size: tuple[int, int] | None = None,
    ) -> None:
        self._write = write
        self._size = size  # the session's size as last announced; the same again is no change
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self._waiting: tuple[int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.coalesced = 0  # window changes not written as their own event

    def __call__(self, width: int, height: int) -> None:
        if (width, height) == self._size:
            return
        self._size = (width, height)
        now = self._clock()
        if self._waiting is None and now - self._last >= self._interval:
            self._last = now
            self._write(width, height)
            return
        if self._waiting is not None:
            self.coalesced += 1
        self._waiting = (width, height)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: written at ``close``
            delay = max(0.0, self._last + self._interval - now)
            self._timer = loop.call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._last = self._clock()
            self._write(*waiting)

    def close(self) -> None:
        """Write the size still waiting, if any; later changes are ignored."""
        if self._timer is not None:
            self._timer.cancel()
        self._due()
        self._write = lambda width, height: None


class EventSink(Protocol):
    """Where the node's events go: ``audit_spool.AuditSpool`` in the agent."""

    def put(self, item: Event, /) -> object: ...


class AuditRefused(Exception):
    """The proxy did not take a batch and will not take it sent again; ``str()`` says why."""


class AuditDeferred(Exception):
    """The proxy could not take a batch now (the platform is out of reach): send it again."""


class Requests(Protocol):
    """Where a batch goes: the tunnel's control channel (``tunnel_control.ControlClient``)."""

    async def request(
        self, make: Callable[[int], AuditBatch | RenewRequest], /
    ) -> Ack | Tempfail | Refusal | Renewed: ...


PACKED_BYTES = MAX_MESSAGE_BYTES - 4096
"""The most events one ``AuditBatch`` message carries, JSON-encoded (room for its frame)."""


def packed(batch: list[Event]) -> list[list[Event]]:
    """``batch`` in messages of at most ``PACKED_BYTES`` (events are at most 12 KiB)."""
    messages: list[list[Event]] = [[]]
    size = 0
    for item in batch:
        length = len(json.dumps(item)) + 2
        if messages[-1] and size + length > PACKED_BYTES:
            messages.append([])
            size = 0
        messages[-1].append(item)
        size += length
    return [m for m in messages if m]


def _batch(events: list[Event], id_: int) -> AuditBatch:
    return AuditBatch(id=id_, events=events)


def sender(control: Requests) -> Callable[[list[Event]], Awaitable[None]]:
    """How an ``Outbox`` of events reaches the proxy over the control channel; a batch too
    large for one message goes in several (resent whole if one fails: the platform
    deduplicates by ``event_id``)."""

    async def send(batch: list[Event]) -> None:
        for events in packed(batch):
            answer = await control.request(functools.partial(_batch, events))
            if isinstance(answer, Tempfail):
                raise AuditDeferred(answer.reason or "try again")
            if not isinstance(answer, Ack):
                reason = answer.reason if isinstance(answer, Refusal) else "refused"
                raise AuditRefused(reason)

    return send

"""The audit log: an append-only, searchable store of events per tenant, and where events go.

Stores (``AuditStore``) keep events for a retention period (one year by default) and answer
searches by tenant, time range (from inclusive, to exclusive), event types and user, oldest
or newest first, a page at a time. A page ends with a cursor whenever more events match, so
a search is never cut short silently at a page size. Every implementation passes the suite
in tests/conformance/test_audit.py.

``Auditor`` is what the rest of the control plane calls: it stamps an event (id, time, code)
and hands it to the store and to any extra sinks (``audit_events_uri``: a JSON-lines file,
stdout), as Teleport's ``audit_events_uri`` list does.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import re
import secrets
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import InvalidRequest
from jumpgate.protocol.audit import MAX_SEARCH_LIMIT, AuditEvent, AuditPage, EventType, code

logger = logging.getLogger(__name__)

RETENTION = timedelta(days=365)
STAMPED = frozenset({"type", "code", "time", "id", "tenant", "success"})
"""Fields the audit log sets on every event; callers cannot."""


STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(moment: datetime) -> str:
    """A time as a fixed-width UTC string that sorts as the time does."""
    return moment.astimezone(UTC).strftime(STAMP_FORMAT)


@dataclass(frozen=True)
class Query:
    """What a search asks for; ``until`` is exclusive."""

    tenant: str
    since: datetime
    until: datetime
    types: frozenset[str] = frozenset()
    user: str = ""
    newest_first: bool = True
    limit: int = 100

    def __post_init__(self) -> None:
        if self.since >= self.until:
            raise InvalidRequest("--from must be before --to")
        if not 1 <= self.limit <= MAX_SEARCH_LIMIT:
            raise InvalidRequest(f"--limit must be between 1 and {MAX_SEARCH_LIMIT}")
        unknown = sorted(self.types - {t.value for t in EventType})
        if unknown:
            raise InvalidRequest(
                f"unknown event type {unknown[0]!r}: see jumpctl audit search --help for types"
            )


@dataclass(frozen=True)
class Position:
    """Where a page ended: the (time, id) of its last event."""

    time: str
    id: str

    def encode(self) -> str:
        raw = json.dumps({"t": self.time, "i": self.id}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            data = json.loads(raw)
            position = cls(str(data["t"]), str(data["i"]))
            datetime.strptime(position.time, STAMP_FORMAT)  # a store reads the day from it
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(
                "cursor is not one this search returned: search again without it"
            ) from exc
        return position


class AuditStore(ABC):
    """Where events are kept and searched."""

    @abstractmethod
    def append(self, event: AuditEvent, *, expires: datetime) -> bool:
        """Keep ``event`` until ``expires``; ``False`` when an event with its tenant, time and
        id is kept already (a re-delivered copy), which is then left as it was."""

    @abstractmethod
    def search(self, query: Query, cursor: str | None = None) -> AuditPage:
        """One page of events matching ``query``, after ``cursor`` if given."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def encode_event(event: AuditEvent) -> str:
    return event.model_dump_json()


def decode_event(body: str) -> AuditEvent:
    return AuditEvent.model_validate_json(body)


class Sink:
    """A write-only destination of events: one JSON object per line."""

    def __init__(self, stream: IO[str], *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned

    def write(self, event: AuditEvent) -> None:
        self._stream.write(encode_event(event) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def sink_path(uri: str) -> Path | None:
    """The file a sink URI names, or None for ``stdout://``; ``ValueError`` for anything else."""
    if uri == "stdout://":
        return None
    path = Path(uri.removeprefix("file://"))
    if not uri.startswith("file://") or not path.is_absolute():
        raise ValueError(f"{uri!r} is not file:///ABSOLUTE/PATH or stdout://")
    return path


def open_sink(uri: str) -> Sink:
    """``file:///path/events.log`` (appended, 0600) or ``stdout://``."""
    path = sink_path(uri)
    if path is None:
        return Sink(sys.stdout, owned=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", encoding="utf-8", opener=_private)  # noqa: SIM115 - closed by Sink.close
    return Sink(stream, owned=True)


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


_EVENT_ID = re.compile(r"[0-9a-f]{32}")


def _delivered_id(value: object) -> str | None:
    """The id a sender chose for an event it may deliver more than once (a node's spooled
    events), so every copy lands on the same key; ``None`` for anything else."""
    if isinstance(value, str) and _EVENT_ID.fullmatch(value):
        return value
    return None


class Auditor:
    """Stamps events and records them in the store and every sink."""

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        *,
        sinks: Sequence[Sink] = (),
        retention: timedelta = RETENTION,
    ) -> None:
        self.store = store
        self._clock = clock
        self._sinks = list(sinks)
        self.retention = retention
        self._sequence = itertools.count()

    def _next_id(self) -> str:
        """Unique, and in emission order among this process's events of the same instant."""
        return f"{next(self._sequence) & 0xFFFFFF:06x}{secrets.token_hex(10)}"

    def emit(
        self,
        event_type: EventType,
        tenant: str,
        *,
        outcome: str = "I",
        time: datetime | None = None,
        **fields: Any,
    ) -> AuditEvent:
        """Record one event; ``fields`` are its common and type-specific fields."""
        stamped = STAMPED.intersection(fields)
        if stamped:
            raise ValueError(f"field {sorted(stamped)[0]!r} is set by the audit log itself")
        event = AuditEvent(
            type=event_type,
            code=code(event_type, outcome),
            time=time or self._clock.now(),
            id=_delivered_id(fields.get("event_id")) or self._next_id(),
            tenant=tenant,
            success=outcome == "I",
            **fields,
        )
        try:
            expires = event.time + self.retention
        except OverflowError:  # a time a node (or a bug) made up: year 9999
            raise ValueError(f"field 'time' is out of range: {event.time.isoformat()}") from None
        if not self.store.append(event, expires=expires):
            return event  # a copy delivered again: kept, and copied to the sinks, once
        for sink in self._sinks:
            try:
                sink.write(event)
            except OSError as exc:
                logger.warning("audit sink write failed", extra={"reason": str(exc)})
        return event

    def search(self, query: Query, cursor: str | None = None) -> AuditPage:
        return self.store.search(query, cursor)

    def close(self) -> None:
        for sink in self._sinks:
            sink.close()
        self.store.close()

"""The AWS audit store: a DynamoDB table through pynamodb.

Layout: hash key ``pk`` is ``<tenant>#<YYYY-MM-DD>`` (a tenant's day: writes spread over
partitions, and a day is one query); range key ``sk`` is ``<time>#<id>`` with a fixed-width
UTC time, so it sorts as the events happened. ``expires`` is the TTL attribute (epoch
seconds, one year by default); DynamoDB sweeps late, so searches drop expired events
themselves. A search walks the days of its range in order, one query per day, with the type
and user filters as a filter expression, until it has a page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import PutError
from pynamodb.models import Model

from jumpgate.control_plane.audit.base import (
    AuditStore,
    Position,
    Query,
    decode_event,
    encode_event,
    stamp,
)
from jumpgate.control_plane.clock import Clock, SystemClock
from jumpgate.control_plane.store.dynamodb import bind, connect, create_with_ttl, table_meta
from jumpgate.control_plane.store.throttle import Retrier
from jumpgate.protocol.audit import AuditEvent, AuditPage


class _Event(Model):
    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    type = UnicodeAttribute()
    user = UnicodeAttribute()
    body = UnicodeAttribute()
    expires = NumberAttribute()


def model_for(table_name: str, region: str, host: str | None = None) -> type[_Event]:
    return type(f"Audit_{table_name}", (_Event,), {"Meta": table_meta(table_name, region, host)})


def ensure_table(table_name: str, region: str, host: str | None = None) -> None:
    """Create the table if missing, with TTL on ``expires`` (production: infrastructure code)."""
    create_with_ttl(model_for(table_name, region, host), region, host)


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class DynamoDBAuditStore(AuditStore):
    """Events in a DynamoDB table; see the module docstring for the layout."""

    def __init__(
        self,
        table_name: str,
        *,
        region: str,
        host: str | None = None,
        clock: Clock | None = None,
        connection: Connection | None = None,
    ) -> None:
        self._model = model_for(table_name, region, host)
        bind(self._model, connection or connect(region, host))
        self._clock = clock or SystemClock()
        self._retry = Retrier(table_name)

    def append(self, event: AuditEvent, *, expires: datetime) -> bool:
        moment = stamp(event.time)
        row = self._model(
            f"{event.tenant}#{moment[:10]}",
            f"{moment}#{event.id}",
            type=event.type.value,
            user=event.user,
            body=encode_event(event),
            expires=int(expires.timestamp()),
        )
        try:
            self._retry("put", lambda: row.save(condition=self._model.sk.does_not_exist()))
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                return False  # a copy delivered again
            raise
        return True

    def _days(self, query: Query, after: Position | None) -> list[datetime]:
        first, last = _day(query.since), _day(query.until - timedelta(microseconds=1))
        if after is not None:
            cursor_day = datetime.fromisoformat(after.time[:10]).replace(tzinfo=UTC)
            first, last = (first, cursor_day) if query.newest_first else (cursor_day, last)
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        return days[::-1] if query.newest_first else days

    def search(self, query: Query, cursor: str | None = None) -> AuditPage:
        after = Position.decode(cursor) if cursor is not None else None
        low, high = stamp(query.since), stamp(query.until)
        after_key = f"{after.time}#{after.id}" if after is not None else None
        now = int(self._clock.now().timestamp())
        condition: Any = self._model.expires > now
        if query.types:
            condition &= self._model.type.is_in(*sorted(query.types))
        if query.user:
            condition &= self._model.user == query.user
        found: list[tuple[str, AuditEvent]] = []
        for day in self._days(query, after):
            lo = max(low, day.strftime("%Y-%m-%dT00:00:00.000000Z"))
            hi = high
            if after_key is not None:
                if query.newest_first:
                    hi = min(hi, after_key)
                else:
                    lo = max(lo, after_key)
            rows = self._model.query(
                f"{query.tenant}#{day:%Y-%m-%d}",
                range_key_condition=self._model.sk.between(lo, hi),
                filter_condition=condition,
                scan_index_forward=not query.newest_first,
                consistent_read=True,
                page_size=min(1000, query.limit * 4),
            )
            for row in self._retry.each("query", rows):
                if row.sk == after_key or row.sk >= f"{high}":
                    continue  # the cursor's own event; ``until`` is exclusive
                found.append((row.sk, decode_event(row.body)))
                if len(found) > query.limit:
                    break
            if len(found) > query.limit:
                break
        more = len(found) > query.limit
        page = found[: query.limit]
        next_cursor = None
        if more:
            last = page[-1][1]
            next_cursor = Position(stamp(last.time), last.id).encode()
        return AuditPage(events=[event for _, event in page], cursor=next_cursor)

"""One suite for every audit store: SQLite, and DynamoDB under moto.

Searches by tenant + time range + types + user, newest or oldest first, page by page with a
cursor; a page never silently cuts a search short; expired events are gone; one tenant never
sees another's events.
"""

import base64
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jumpgate.control_plane.audit.base import Auditor, AuditStore, Query, Sink
from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.errors import InvalidRequest
from jumpgate.protocol.audit import AuditEvent, EventType, code

T0 = datetime(2026, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


def _event(
    when: datetime,
    event_type: EventType = EventType.EXEC,
    tenant: str = "acme",
    user: str = "alice",
) -> AuditEvent:
    return AuditEvent(
        type=event_type,
        code=code(event_type),
        time=when,
        id=uuid.uuid4().hex,
        tenant=tenant,
        user=user,
        command="echo hi",
        exit_code=0,
    )


def _all(store: AuditStore, query: Query) -> list[AuditEvent]:
    """Every matching event, following cursors; asserts pages are full until the last."""
    events: list[AuditEvent] = []
    cursor = None
    for _ in range(1000):
        page = store.search(query, cursor)
        events += page.events
        if page.cursor is None:
            return events
        assert len(page.events) == query.limit
        cursor = page.cursor
    raise AssertionError("search never ended")


def _query(**kwargs: object) -> Query:
    # Three weeks: a DynamoDB search is a query per day of its range.
    defaults: dict[str, object] = {
        "tenant": "acme",
        "since": T0 - timedelta(days=1),
        "until": T0 + timedelta(days=20),
    }
    return Query(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_events_come_back_whole_newest_or_oldest_first(audit_store: AuditStore) -> None:
    events = [_event(T0 + timedelta(minutes=n)) for n in range(5)]
    for event in reversed(events):
        audit_store.append(event, expires=T0 + YEAR)
    newest = audit_store.search(_query())
    assert newest.events == events[::-1]
    assert newest.cursor is None
    assert newest.events[0].model_extra == {"command": "echo hi", "exit_code": 0}
    assert audit_store.search(_query(newest_first=False)).events == events


def test_pages_follow_cursors_across_days_without_loss_or_repeat(
    audit_store: AuditStore,
) -> None:
    # 37 events over four days, two of them at the same instant (ids break the tie)
    moments = [T0 + timedelta(hours=7 * n) for n in range(36)] + [T0 + timedelta(hours=7)]
    events = [_event(m) for m in moments]
    for event in events:
        audit_store.append(event, expires=T0 + YEAR)
    for newest_first in (True, False):
        for limit in (1, 5, 36, 37, 100):
            got = _all(audit_store, _query(limit=limit, newest_first=newest_first))
            assert len(got) == 37
            assert len({e.id for e in got}) == 37
            times = [e.time for e in got]
            assert times == sorted(times, reverse=newest_first)


def test_time_range_is_from_inclusive_to_exclusive(audit_store: AuditStore) -> None:
    for n in range(10):
        audit_store.append(_event(T0 + timedelta(days=n)), expires=T0 + YEAR)
    got = _all(
        audit_store,
        _query(since=T0 + timedelta(days=2), until=T0 + timedelta(days=5), limit=2),
    )
    assert [e.time for e in got] == [T0 + timedelta(days=d) for d in (4, 3, 2)]


def test_filters_by_type_and_user(audit_store: AuditStore) -> None:
    kinds = [EventType.EXEC, EventType.SESSION_START, EventType.USER_LOGIN]
    for n in range(30):
        user = "alice" if n % 2 else "bob"
        audit_store.append(
            _event(T0 + timedelta(minutes=n), kinds[n % 3], user=user), expires=T0 + YEAR
        )
    logins = _all(audit_store, _query(types=frozenset({"user.login"}), limit=3))
    assert len(logins) == 10
    assert {e.type for e in logins} == {EventType.USER_LOGIN}
    bobs = _all(audit_store, _query(user="bob", types=frozenset({"exec", "session.start"})))
    assert len(bobs) == 10
    assert {e.user for e in bobs} == {"bob"}
    assert _all(audit_store, _query(user="carol")) == []


def test_tenants_never_see_each_other(audit_store: AuditStore) -> None:
    audit_store.append(_event(T0, tenant="acme"), expires=T0 + YEAR)
    audit_store.append(_event(T0, tenant="globex", user="gina"), expires=T0 + YEAR)
    assert [e.tenant for e in _all(audit_store, _query())] == ["acme"]
    assert [e.user for e in _all(audit_store, _query(tenant="globex"))] == ["gina"]
    assert _all(audit_store, _query(tenant="initech")) == []


def test_expired_events_are_gone(audit_store: AuditStore, clock: ManualClock) -> None:
    audit_store.append(_event(T0), expires=T0 + timedelta(days=1))
    audit_store.append(_event(T0 + timedelta(seconds=1)), expires=T0 + YEAR)
    assert len(_all(audit_store, _query())) == 2
    clock.advance(timedelta(days=2))
    assert len(_all(audit_store, _query())) == 1


def test_bad_queries_and_cursors_are_refused(audit_store: AuditStore) -> None:
    with pytest.raises(InvalidRequest, match=r"--from must be before --to"):
        _query(since=T0, until=T0)
    with pytest.raises(InvalidRequest, match=r"--limit must be between 1 and 1000"):
        _query(limit=0)
    with pytest.raises(InvalidRequest, match=r"unknown event type 'session\.explode'"):
        _query(types=frozenset({"session.explode"}))
    forged = base64.urlsafe_b64encode(b'{"t": "zzzz", "i": "x"}').decode()
    for cursor in ("not-a-cursor!", forged):
        with pytest.raises(InvalidRequest, match="cursor is not one this search returned"):
            audit_store.search(_query(), cursor)


def test_an_event_delivered_twice_is_kept_once(audit_store: AuditStore) -> None:
    """A node re-sends a batch cut off by a crash (at least once): the same event, same id,
    lands on the same key, and neither copy replaces the other."""
    first = _event(T0)
    assert audit_store.append(first, expires=T0 + YEAR) is True
    again = first.model_copy(update={"user": "mallory"})
    assert audit_store.append(again, expires=T0 + YEAR) is False
    page = audit_store.search(Query(tenant="acme", since=T0, until=T0 + timedelta(days=1)))
    assert [(e.id, e.user) for e in page.events] == [(first.id, "alice")]


def test_a_node_event_sent_again_after_a_crash_is_recorded_once(
    audit_store: AuditStore, clock: ManualClock
) -> None:
    copies = io.StringIO()
    auditor = Auditor(audit_store, clock, sinks=[Sink(copies, owned=False)])
    sent: dict[str, Any] = {"user": "alice", "event_id": uuid.uuid4().hex, "exit_code": 0}
    first = auditor.emit(EventType.SESSION_END, "acme", time=T0, **sent)
    again = auditor.emit(EventType.SESSION_END, "acme", time=T0, **sent)
    other = auditor.emit(EventType.SESSION_END, "acme", time=T0, user="alice", event_id="x" * 32)
    assert first.id == again.id == sent["event_id"]
    assert other.id != "x" * 32  # not an id a sender may choose: the log makes its own
    page = audit_store.search(Query(tenant="acme", since=T0, until=T0 + timedelta(days=1)))
    assert sorted(e.id for e in page.events) == sorted([first.id, other.id])
    assert len(copies.getvalue().splitlines()) == 2

"""A session's audit budget (decision 0016, second review): a session whose transfer events
outrun what the platform can take is ended, with a ``W`` event saying so, while what real
scp, sftp and shell use makes stays far below it. Lifecycle events are never counted."""

from typing import Any

from jumpgate.node_agent import audit
from jumpgate.node_agent.audit_budget import Budget, Budgets

Event = dict[str, Any]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, item: Event, /) -> None:
        self.events.append(item)


def _who(user: str = "alice", session: str = "s-1") -> dict[str, str]:
    return {"user": user, "login": "root", "session_id": session}


def _sftp(who: dict[str, str], path: str = "/srv/data/file.txt") -> Event:
    return audit.event("sftp", **who, action="write", path=path, length=4096)


def _types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def test_a_big_real_transfer_stays_within_the_budget() -> None:
    """An sftp upload of 5,000 small files at 200 files a second (one event each, as the
    watcher reports them) is well inside a session's budget."""
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    session = Budgets(clock=clock).session(sink, _who(), stops.append)
    for n in range(5000):
        session.put(_sftp(_who(), f"/srv/upload/dir-{n // 100}/file-{n}.dat"))
        clock.now += 1 / 200
    assert stops == []
    assert _types(sink.events) == ["sftp"] * 5000


def test_a_session_over_its_budget_is_ended_with_a_warning() -> None:
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    budget = Budget(events_per_second=10, events_burst=50, bytes_per_second=1e9, bytes_burst=1e9)
    session = Budgets(session=budget, user=budget, clock=clock).session(sink, _who(), stops.append)
    for _ in range(80):  # all at once: 50 fit, the 51st goes over
        session.put(_sftp(_who()))
    assert len(stops) == 1
    assert "audit budget" in stops[0]
    over = [e for e in sink.events if e["type"] == "session.over_budget"]
    assert len(over) == 1
    assert over[0]["outcome"] == "W"
    assert over[0]["fields"]["session_id"] == "s-1"
    assert over[0]["fields"]["user"] == "alice"
    assert "budget" in over[0]["fields"]["error"]
    # fail closed: every event made is still written, the one that crossed the line included
    assert _types(sink.events).count("sftp") == 80
    assert _types(sink.events).index("session.over_budget") == 51


def test_the_budget_is_bytes_as_well_as_events() -> None:
    """Few events, but each a 4 KB rename of long paths: what the review's flood sent."""
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    budget = Budget(bytes_per_second=10_000, bytes_burst=100_000)
    session = Budgets(session=budget, user=budget, clock=clock).session(sink, _who(), stops.append)
    long = "/nonexistent/" + "a" * 1980
    for _ in range(10):
        session.put(_sftp(_who(), long))
        clock.now += 0.1
    assert stops == []
    for _ in range(100):
        session.put(_sftp(_who(), long))
        clock.now += 0.01
    assert len(stops) == 1


def test_the_budget_refills_with_time() -> None:
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    budget = Budget(events_per_second=10, events_burst=50, bytes_per_second=1e9, bytes_burst=1e9)
    session = Budgets(session=budget, user=budget, clock=clock).session(sink, _who(), stops.append)
    for _ in range(10):
        for _ in range(45):
            session.put(_sftp(_who()))
        clock.now += 5  # 50 tokens back
    assert stops == []


def test_lifecycle_events_are_never_counted() -> None:
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    budget = Budget(events_per_second=1, events_burst=1, bytes_per_second=1, bytes_burst=1)
    session = Budgets(session=budget, user=budget, clock=clock).session(sink, _who(), stops.append)
    for kind in ("session.start", "exec", "session.end") * 100:
        session.put(audit.event(kind, **_who(), command="x" * 1000))
    assert stops == []
    assert len(sink.events) == 300


def test_one_users_sessions_share_a_budget_and_other_users_keep_theirs() -> None:
    clock, sink, stops = _Clock(), _Sink(), list[str]()
    own = Budget(events_per_second=10, events_burst=50, bytes_per_second=1e9, bytes_burst=1e9)
    user = Budget(events_per_second=10, events_burst=70, bytes_per_second=1e9, bytes_burst=1e9)
    budgets = Budgets(session=own, user=user, clock=clock)
    first = budgets.session(sink, _who("alice", "a-1"), stops.append)
    second = budgets.session(sink, _who("alice", "a-2"), stops.append)
    other = budgets.session(sink, _who("bob", "b-1"), stops.append)
    for _ in range(40):
        first.put(_sftp(_who("alice", "a-1")))
    for _ in range(40):  # within its own 50, but alice has spent her 70
        second.put(_sftp(_who("alice", "a-2")))
    for _ in range(40):
        other.put(_sftp(_who("bob", "b-1")))
    assert len(stops) == 1
    over = [e for e in sink.events if e["type"] == "session.over_budget"]
    assert [e["fields"]["session_id"] for e in over] == ["a-2"]


def test_idle_users_are_forgotten() -> None:
    """The agent keeps a user's budget only while it is being spent."""
    clock, sink = _Clock(), _Sink()
    budgets = Budgets(clock=clock)
    for n in range(3000):
        budgets.session(sink, _who(f"user-{n}", f"s-{n}"), lambda reason: None).put(
            _sftp(_who(f"user-{n}", f"s-{n}"))
        )
        clock.now += 10
    assert len(budgets) < 1100

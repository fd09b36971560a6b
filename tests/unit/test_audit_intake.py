"""The proxy's intake of a node's events: its budget, and its times within the proxy's skew."""

import json
from datetime import UTC, datetime, timedelta

from jumpgate.edge_proxy.audit_intake import MAX_WAIT, AuditBudget, TunnelAudit, record
from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType

NODE = models.TunnelNode(tenant="acme", host_id="h1", nodename="web-1")


def _line(when: str, **fields: object) -> str:
    return json.dumps({"type": "exec", "time": when, "fields": {"command": "id", **fields}})


def test_a_budget_lets_a_burst_through_then_makes_batches_wait_then_refuses() -> None:
    now = [0.0]
    budget = AuditBudget(events_per_second=10, events_burst=100, bytes_per_second=1e9)
    intake = TunnelAudit(budget, clock=lambda: now[0])
    assert intake.wait_for(100, 1000) == 0.0
    assert intake.wait_for(10, 100) == 1.0  # waits for its tokens
    assert intake.wait_for(100, 100) is None  # more than MAX_WAIT away: refused, not taken
    assert not intake.exhausted()
    assert intake.wait_for(40, 100) == MAX_WAIT  # the last batch that may wait
    assert intake.exhausted()  # the next is refused before it is read
    now[0] += 60
    assert intake.wait_for(100, 1000) == 0.0
    assert intake.over_budget >= 1


def test_a_time_far_from_the_proxys_or_without_a_zone_is_the_proxys() -> None:
    received = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    intake = TunnelAudit()
    near = (received - timedelta(minutes=4)).isoformat()
    assert record(NODE, _line(near), received, intake).time == received - timedelta(minutes=4)
    for when in ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "2026-12-03T10:00:00"]:
        made = record(NODE, _line(when), received, intake)
        assert made.time == received
        assert made.fields["node_time"] == when
    assert intake.clamped == 3


def test_a_bad_line_is_dropped_on_its_own_saying_why() -> None:
    received = datetime.now(UTC)
    intake = TunnelAudit()
    long = record(NODE, _line(received.isoformat(), command="x" * 20000), received, intake)
    assert (long.type, long.outcome) == (EventType.AUDIT_DROPPED, "W")
    assert "longer than" in str(long.fields["error"])
    nested = record(NODE, _line(received.isoformat(), command={"a": 1}), received, intake)
    assert nested.type == EventType.AUDIT_DROPPED
    assert str(nested.fields["error"]).startswith("the event does not fit: fields.command")
    assert intake.dropped == 2


def test_a_nodes_own_dropped_count_and_budget_warning_are_taken() -> None:
    """The node reports what its spool dropped, a session it ended over its budget, and a
    login or channel it refused."""
    received = datetime.now(UTC)
    intake = TunnelAudit()
    for kind, fields in (
        ("audit.dropped", {"dropped": 4711, "error": "the node's audit spool was full"}),
        ("session.over_budget", {"session_id": "s-1", "user": "alice", "error": "over budget"}),
        # a login the node's own check of roles, locks or expiry refused (decision 0034)
        ("session.rejected", {"user": "alice", "login": "root", "error": "denied by role"}),
    ):
        line = json.dumps(
            {"type": kind, "outcome": "W", "time": received.isoformat(), "fields": fields}
        )
        made = record(NODE, line, received, intake)
        assert (made.type, made.outcome) == (kind, "W")
        assert {k: made.fields.get(k) for k in fields} == fields  # the node's own, not a stand-in
        assert made.fields["origin"] == "node"
        assert made.fields["server_id"] == "h1"
    assert intake.dropped == 0


def test_a_deeply_nested_line_is_dropped_as_not_json() -> None:
    """Finding 10: a nested line within the line limit raised ``RecursionError`` and dropped
    the node's tunnel connection; it is one ``audit.dropped`` like any line that is not JSON."""
    intake = TunnelAudit()
    made = record(NODE, "[" * 7000 + "]" * 7000, datetime.now(UTC), intake)
    assert (made.type, made.outcome) == (EventType.AUDIT_DROPPED, "W")
    assert made.fields["error"] == "a line is not JSON"
    assert intake.dropped == 1

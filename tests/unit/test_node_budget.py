"""One node's budget on the tunnel front: presence writes coalesced, renewals rate-limited,
failed tunnel logins costing their source (issue 14 review, findings 6 and 15)."""

import pytest

from jumpgate.edge_proxy.node_budget import NodeBudgets, TunnelLimits
from jumpgate.protocol import models


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _presence(label: str) -> models.Presence:
    return models.Presence(
        tenant="acme", host_id="h1", proxy="p1", hostname="web-1", labels={"x": label}
    )


def test_presence_changes_within_the_interval_are_coalesced_into_the_latest() -> None:
    clock = Clock()
    budget = NodeBudgets(TunnelLimits(presence_every=5.0), clock).of("acme", "h1")
    first = _presence("0")
    assert budget.presence_wait(first) == 0.0
    budget.wrote(first)
    assert budget.presence_wait(first) is None  # unchanged: nothing to write
    for n in range(1, 1000):  # a flood of changes within one interval: none written now
        clock.now += 0.001
        wait = budget.presence_wait(_presence(str(n)))
        assert wait is not None
        assert wait > 0
    assert budget.pending == _presence("999")  # only the latest waits
    clock.now += 5.0
    assert budget.presence_wait(budget.pending) == 0.0
    budget.wrote(_presence("999"))
    assert budget.pending is None


def test_a_change_taken_back_before_its_turn_is_not_written() -> None:
    clock = Clock()
    budget = NodeBudgets(TunnelLimits(presence_every=5.0), clock).of("acme", "h1")
    budget.wrote(_presence("a"))
    clock.now += 1
    assert budget.presence_wait(_presence("b")) == pytest.approx(4.0)
    assert budget.presence_wait(_presence("a")) is None
    assert budget.pending is None


def test_heartbeat_lines_beyond_the_rate_wait_their_turn() -> None:
    clock = Clock()
    budget = NodeBudgets(TunnelLimits(heartbeats_per_second=5.0, heartbeat_burst=20), clock).of(
        "acme", "h1"
    )
    assert [budget.beat_wait() for _ in range(20)] == [0.0] * 20
    assert budget.beat_wait() == pytest.approx(0.2)


def test_renewals_allow_a_burst_then_one_a_minute() -> None:
    clock = Clock()
    budget = NodeBudgets(TunnelLimits(renewals_per_minute=1.0, renewal_burst=3), clock).of(
        "acme", "h1"
    )
    assert [budget.renewal_wait() for _ in range(3)] == [0, 0, 0]
    assert budget.renewal_wait() == 60
    clock.now += 61
    assert budget.renewal_wait() == 0
    assert budget.renewal_wait() > 0


def test_each_node_has_its_own_budget_over_all_its_connections() -> None:
    budgets = NodeBudgets(TunnelLimits(renewal_burst=1), Clock())
    assert budgets.of("acme", "h1") is budgets.of("acme", "h1")
    assert budgets.of("acme", "h1").renewal_wait() == 0
    assert budgets.of("acme", "h1").renewal_wait() > 0
    assert budgets.of("beta", "h1").renewal_wait() == 0  # another tenant's node


def test_failed_tunnel_logins_cost_their_source_and_successes_give_back() -> None:
    budgets = NodeBudgets(TunnelLimits(auth_failures_per_second=1.0, auth_failure_burst=3), Clock())
    assert [budgets.auth_failures.take("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budgets.auth_failures.take("10.0.0.1") > 0
    assert budgets.auth_failures.take("10.0.0.2") == 0.0
    budgets.auth_failures.give_back("10.0.0.2")
    assert [budgets.auth_failures.take("10.0.0.2") for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "bad",
    [
        {"renewals_per_minute": 0},
        {"channels_per_connection": 0},
        {"connections_per_node": 0},
        {"auth_failures_per_second": 0},
        {"heartbeats_per_second": 0},
        {"presence_every": -1},
    ],
    ids=[
        "no-renewals",
        "no-channels",
        "no-connections",
        "no-auth-rate",
        "no-heartbeats",
        "negative-interval",
    ],
)
def test_limits_that_would_refuse_everything_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TunnelLimits(**bad)  # type: ignore[arg-type]

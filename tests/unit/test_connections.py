"""The proxy's per-source connection gate and its configuration (decision 0019)."""

from collections import Counter
from pathlib import Path

import pytest

from jumpgate.cli.daemon.config import ConfigError, load
from jumpgate.edge_proxy.connections import Admission, ConnectionLimits, SourceGate, source_key

PEER = ("192.0.2.7", 50000)
OTHER = ("192.0.2.8", 50001)


def _gate(total: int, unauthenticated: int) -> SourceGate:
    limits = ConnectionLimits(max_per_source=total, max_unauthenticated_per_source=unauthenticated)
    return SourceGate("ssh", limits, Counter())


def test_unauthenticated_cap_is_per_source_and_freed_by_authentication() -> None:
    gate = _gate(total=3, unauthenticated=2)
    first, second = gate.admit(PEER), gate.admit(PEER)
    assert first is not None
    assert second is not None
    assert gate.admit(PEER) is None, "a 3rd unauthenticated connection was let in"
    assert gate.admit(OTHER) is not None, "another source was refused for this one's count"
    first.authenticated()
    third = gate.admit(PEER)
    assert third is not None, "an authenticated connection still counted as unauthenticated"
    assert gate.admit(PEER) is None, "a 4th connection was let in (total cap 3)"
    assert gate.refused == Counter({"ssh": 2})


def test_release_is_idempotent_and_forgets_idle_sources() -> None:
    gate = _gate(total=1, unauthenticated=1)
    admitted = gate.admit(PEER)
    assert admitted is not None
    admitted.authenticated()
    admitted.release()
    admitted.release()
    admitted.authenticated()
    assert PEER[0] not in gate.live
    assert PEER[0] not in gate.unauthenticated
    assert gate.admit(PEER) is not None


def test_ipv6_sources_are_keyed_on_their_64() -> None:
    """One host holds a whole /64: each address in it is the same source."""
    gate = _gate(total=4, unauthenticated=2)
    assert gate.admit(("2001:db8:1:2::1", 22, 0, 0)) is not None
    assert gate.admit(("2001:db8:1:2:ffff:ffff:ffff:fffe", 22, 0, 0)) is not None
    assert gate.admit(("2001:db8:1:2:abcd::7", 22, 0, 0)) is None, "a /64 got a 3rd handshake"
    assert gate.admit(("2001:db8:1:3::1", 22, 0, 0)) is not None, "the next /64 was refused"


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_source_key(address: str, key: str) -> None:
    assert source_key((address, 22)) == key


def test_ipv4_mapped_and_plain_ipv4_are_one_source() -> None:
    gate = _gate(total=4, unauthenticated=1)
    assert gate.admit(("::ffff:192.0.2.7", 22, 0, 0)) is not None
    assert gate.admit(PEER) is None, "the same IPv4 host, mapped, counted as another source"


def test_global_unauthenticated_cap_spans_sources() -> None:
    limits = ConnectionLimits(max_unauthenticated_per_source=2, max_unauthenticated=3)
    gate = SourceGate("web", limits, Counter())
    admitted = [gate.admit((f"192.0.2.{n}", 1)) for n in (1, 2, 3)]
    assert all(admitted)
    # full, and 192.0.2.1 already holds as many as any source: a 4th is refused
    assert gate.admit(("192.0.2.1", 1)) is None, "a 4th handshake was let in (global cap 3)"
    first = admitted[0]
    assert first is not None
    first.authenticated()
    assert gate.admit(("192.0.2.1", 1)) is not None, "an authenticated one still counted"
    assert gate.admit(("192.0.2.2", 1)) is None
    for each in admitted:
        assert each is not None
        each.release()
        each.release()
    assert gate.admit(("192.0.2.4", 1)) is not None
    assert gate.unauthenticated_total == 2
    assert gate.refused == Counter({"web": 2})


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("{max_connections_per_source: 0}", "connection_limits.max_connections_per_source"),
        ("{max_unauthenticated_per_source: many}", "max_unauthenticated_per_source"),
        ("{header_timeout: 10}", "header_timeout"),
        ("{idle_timeout: 0s}", "idle_timeout"),
        ("{login_grace: 30s}", "unknown key(s) login_grace"),
        ("{max_unauthenticated_connections: 0}", "max_unauthenticated_connections"),
        ("{max_sessions_per_connection: -1}", "max_sessions_per_connection"),
        ("{max_forwarded_channels_per_connection: x}", "max_forwarded_channels_per_connection"),
    ],
    ids=["zero-cap", "text-cap", "no-unit", "zero-timeout", "misspelt", "global", "sess", "fwd"],
)
def test_bad_connection_limits_are_one_line_naming_the_key(
    tmp_path: Path, section: str, named: str
) -> None:
    config = tmp_path / "jumpgate.yaml"
    config.write_text(f"connection_limits: {section}\n")
    with pytest.raises(ConfigError, match="connection_limits") as caught:
        load(config, {})
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_connection_limits_reach_the_proxy_in_seconds(tmp_path: Path) -> None:
    config = tmp_path / "jumpgate.yaml"
    config.write_text(
        "connection_limits: {max_connections_per_source: 9, header_timeout: 1m30s,"
        " login_grace_time: 5s, max_unauthenticated_connections: 100,"
        " max_sessions_per_connection: 4, max_forwarded_channels_per_connection: 8}\n"
    )
    limits = load(config, {}).connection_limits.limits()
    assert limits.max_per_source == 9
    assert limits.header_timeout == 90
    assert limits.login_grace == 5
    assert limits.max_unauthenticated == 100
    assert limits.max_sessions_per_connection == 4
    assert limits.max_forwards_per_connection == 8
    assert (
        limits.max_unauthenticated_per_source == ConnectionLimits().max_unauthenticated_per_source
    )


def test_a_flood_of_refusals_logs_a_line_a_second(caplog: pytest.LogCaptureFixture) -> None:
    """Every refusal is counted, but a flood of them is not a flood of log lines."""
    gate = _gate(total=1, unauthenticated=1)
    assert gate.admit(PEER) is not None
    with caplog.at_level("INFO", logger="jumpgate.edge_proxy.connections"):
        for _ in range(1000):
            assert gate.admit(PEER) is None
    lines = [r for r in caplog.records if r.getMessage().startswith("connection refused")]
    assert gate.refused["ssh"] == 1000
    assert len(lines) == 1, len(lines)


class Dropped:
    """Which admitted connections the gate cut (their ``abort`` callbacks)."""

    def __init__(self) -> None:
        self.cut: list[str] = []

    def admit(self, gate: SourceGate, address: str, name: str) -> Admission | None:
        return gate.admit((address, 1), abort=lambda: self.cut.append(name))


def test_a_full_listener_drops_the_oldest_handshake_of_the_source_holding_the_most() -> None:
    """The review's attack in small: four sources at their per-source cap fill the listener.
    A fresh source is still let in, and what makes room is the oldest handshake of a source
    holding the most, not anything of the newcomer's; a heavy source gets nothing more."""
    limits = ConnectionLimits(max_unauthenticated_per_source=4, max_unauthenticated=16)
    gate = SourceGate("ssh", limits, Counter())
    dropped = Dropped()
    for n in range(4):
        for k in range(4):
            assert dropped.admit(gate, f"192.0.2.{n + 1}", f"a{n + 1}.{k}") is not None
    assert gate.unauthenticated_total == 16
    beta = dropped.admit(gate, "198.51.100.7", "beta")
    assert beta is not None, "a fresh source was refused on a full listener"
    assert dropped.cut == ["a1.0"], dropped.cut  # the oldest of the first to hold the most
    assert gate.unauthenticated_total == 16
    assert gate.unauthenticated["192.0.2.1"] == 3
    # the attacker reconnecting takes from the other heavy sources, never from beta
    for n in range(12):
        again = dropped.admit(gate, f"192.0.2.{n % 4 + 1}", f"again{n}")
        assert again is not None or n % 4 == 0
    assert "beta" not in dropped.cut
    assert gate.unauthenticated["198.51.100.7"] == 1
    assert gate.unauthenticated_total == 16
    # every source at one share: a source already holding as many is refused, not let in
    even = ConnectionLimits(max_unauthenticated_per_source=4, max_unauthenticated=4)
    fair = SourceGate("web", even, Counter())
    for n in range(4):
        assert dropped.admit(fair, f"203.0.113.{n + 1}", f"f{n}") is not None
    assert dropped.admit(fair, "203.0.113.1", "f0-again") is None
    assert fair.refused == Counter({"web": 1})
    assert dropped.admit(fair, "203.0.113.9", "newcomer") is not None
    assert dropped.cut[-1] == "f0", "the oldest of the sources holding the most"


def test_a_dropped_connection_is_released_once_and_authenticated_ones_are_never_dropped() -> None:
    limits = ConnectionLimits(max_unauthenticated_per_source=3, max_unauthenticated=3)
    gate = SourceGate("tunnel", limits, Counter())
    dropped = Dropped()
    first = dropped.admit(gate, "192.0.2.1", "first")
    held = [dropped.admit(gate, "192.0.2.1", f"held{n}") for n in range(2)]
    assert first is not None
    first.authenticated()  # a node past its login: not a handshake any more
    third = dropped.admit(gate, "192.0.2.1", "third")
    assert third is not None
    assert dropped.admit(gate, "192.0.2.2", "fresh") is not None
    assert dropped.cut == ["held0"]
    victim = held[0]
    assert victim is not None
    victim.release()  # its connection_lost, after the cut: counted once
    victim.authenticated()
    assert gate.live["192.0.2.1"] == 3
    assert gate.unauthenticated["192.0.2.1"] == 2
    assert gate.unauthenticated_total == 3
    for each in (first, held[1], third):
        assert each is not None
        each.release()
    assert "192.0.2.1" not in gate.live
    assert gate.unauthenticated_total == 1

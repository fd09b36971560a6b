"""Node presence on both stores: written on change, offline with its proxy, gone after 10 min."""

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.errors import Unauthenticated
from jumpgate.control_plane.nodes import NodeInfo
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.protocol import certs


def _join(plane: ControlPlane, tenant: str = "acme", name: str = "web-1") -> tuple[str, str]:
    if tenant not in {t.name for t in plane.tenants.list()}:
        plane.tenants.create(tenant, admin="alice", logins=["root"])
    token = plane.tokens.create(tenant, roles=["node"], ttl=timedelta(minutes=5))
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    joined = plane.tokens.join(tenant, token=token.token, public_key=key, nodename=name)
    return joined.host_id, key


INFO = NodeInfo(hostname="web-1", addr="10.0.0.5", version="0.1.0", labels={"env": "prod"})


def test_tunnel_auth_takes_only_the_joined_key(plane: ControlPlane) -> None:
    host_id, key = _join(plane)
    assert plane.nodes.authenticate_tunnel("acme", host_id, key).nodename == "web-1"
    other = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(Unauthenticated, match="does not match"):
        plane.nodes.authenticate_tunnel("acme", host_id, other)
    globex_id, globex_key = _join(plane, "globex")
    with pytest.raises(Unauthenticated, match="not joined to this cluster"):
        plane.nodes.authenticate_tunnel("acme", globex_id, globex_key)
    with pytest.raises(Unauthenticated):
        plane.nodes.authenticate_tunnel("Not_A_Tenant", host_id, key)


def test_presence_is_written_only_when_it_changes(plane: ControlPlane) -> None:
    host_id, _ = _join(plane)
    plane.nodes.proxy_alive("proxy-1")
    assert plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=INFO) is True
    assert plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=INFO) is False
    changed = NodeInfo(INFO.hostname, INFO.addr, INFO.version, {"env": "staging"})
    assert plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=changed) is True
    [view] = plane.nodes.list("acme")
    assert view.online
    assert view.record.labels == {"env": "staging"}
    assert plane.nodes.set_presence("acme", host_id, proxy=None) is True
    assert plane.nodes.set_presence("acme", host_id, proxy=None) is False
    assert [v.online for v in plane.nodes.list("acme")] == [False]


def test_nodes_of_a_dead_proxy_go_offline_without_writes(
    plane: ControlPlane, clock: ManualClock
) -> None:
    host_id, _ = _join(plane)
    plane.nodes.proxy_alive("proxy-1")
    plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=INFO)
    clock.advance(timedelta(seconds=89))
    assert [v.online for v in plane.nodes.list("acme")] == [True]
    clock.advance(timedelta(seconds=2))  # the proxy stopped beating 91 s ago
    assert [v.online for v in plane.nodes.list("acme")] == [False]


def test_offline_nodes_leave_the_listing_after_ten_minutes(
    plane: ControlPlane, clock: ManualClock
) -> None:
    host_id, _ = _join(plane)
    plane.nodes.proxy_alive("proxy-1")
    plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=INFO)
    plane.nodes.set_presence("acme", host_id, proxy=None)
    clock.advance(timedelta(minutes=9, seconds=59))
    assert len(plane.nodes.list("acme")) == 1
    clock.advance(timedelta(seconds=2))
    assert plane.nodes.list("acme") == []


def test_nodes_are_listed_per_tenant(plane: ControlPlane) -> None:
    _join(plane, "acme", "web-1")
    _join(plane, "globex", "db-1")
    assert [v.record.nodename for v in plane.nodes.list("acme")] == ["web-1"]
    assert [v.record.nodename for v in plane.nodes.list("globex")] == ["db-1"]

"""Node presence on both stores: written on change, offline with its proxy, gone after 10 min."""

import asyncio
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.errors import InvalidRequest, NotFound, Unauthenticated
from jumpgate.control_plane.handlers.api import Handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.nodes import NodeInfo
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.edge_proxy.control import ControlPlaneClient
from jumpgate.edge_proxy.events import Event, Invoke
from jumpgate.protocol import certs


def _join(plane: ControlPlane, tenant: str = "acme", name: str = "web-1") -> tuple[str, str]:
    if tenant not in {t.name for t in plane.tenants.list()}:
        plane.tenants.create(tenant, admin="alice", logins=["root"])
    token = plane.tokens.create(tenant, system_roles=["node"], ttl=timedelta(minutes=5))
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


def test_a_node_is_located_on_its_live_proxy_within_its_tenant(
    plane: ControlPlane, clock: ManualClock
) -> None:
    host_id, key = _join(plane, "acme", "web-1")
    globex_id, _ = _join(plane, "globex", "web-1")
    plane.nodes.proxy_alive("proxy-1", "10.0.1.7:3021")
    plane.nodes.proxy_alive("proxy-2", "10.0.2.9:3021")
    plane.nodes.set_presence("acme", host_id, proxy="proxy-1", info=INFO)
    plane.nodes.set_presence("globex", globex_id, proxy="proxy-2", info=INFO)
    for name in ("web-1", "WEB-1", host_id, f"{host_id}.acme"):
        node, proxy = plane.nodes.locate("acme", name)
        assert (node.host_id, node.public_key) == (host_id, key)
        assert (proxy.proxy_id, proxy.peer_addr) == ("proxy-1", "10.0.1.7:3021")
    with pytest.raises(NotFound, match="not online in cluster 'acme'"):
        plane.nodes.locate("acme", globex_id)  # another tenant's node is not there at all
    second, _ = _join(plane, "acme", "web-1")
    plane.nodes.set_presence("acme", second, proxy="proxy-2", info=INFO)
    with pytest.raises(InvalidRequest, match="2 nodes are named 'web-1': use a uuid"):
        plane.nodes.locate("acme", "web-1")
    clock.advance(timedelta(seconds=91))  # both proxies went silent
    with pytest.raises(NotFound):
        plane.nodes.locate("acme", host_id)


def test_proxy_certificates_name_the_proxy_and_come_from_one_ca(plane: ControlPlane) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    first = plane.proxies.certify("proxy-1", certs.openssh_public(key.public_key()))
    second = plane.proxies.certify("proxy-2", certs.openssh_public(key.public_key()))
    assert first.ca == second.ca
    host = load_ssh_public_identity(first.host_certificate.encode())
    user = load_ssh_public_identity(first.user_certificate.encode())
    assert isinstance(host, SSHCertificate)
    assert isinstance(user, SSHCertificate)
    for cert in (host, user):
        cert.verify_cert_signature()
        assert certs.openssh_public(cert.signature_key()) == first.ca
        assert cert.valid_principals == [b"proxy-1"]
    assert (host.type, user.type) == (SSHCertificateType.HOST, SSHCertificateType.USER)
    assert user.extensions == {b"permit-port-forwarding": b""}
    for proxy, public in (("Proxy 1!", certs.openssh_public(key.public_key())), ("p", "nope")):
        with pytest.raises(InvalidRequest, match="proxy certificate"):
            plane.proxies.certify(proxy, public)


def test_a_removed_node_is_told_to_every_proxy_for_five_minutes(
    plane: ControlPlane, clock: ManualClock
) -> None:
    """``jumpctl nodes rm`` may be served anywhere; the proxy holding the tunnel learns of it
    from one poll of the platform's removals (decision 0017)."""
    acme_id, _ = _join(plane)
    globex_id, _ = _join(plane, "globex", "db-1")
    kept_id, _ = _join(plane, "acme", "web-2")
    client = ControlPlaneClient(_in_process(make_internal_handler(plane)))

    def removed() -> set[tuple[str, str, str]]:
        nodes = asyncio.run(client.node_removals())
        return {(n.tenant, n.host_id, n.nodename) for n in nodes}

    assert removed() == set()
    plane.nodes.remove("acme", "web-1")
    clock.advance(timedelta(minutes=1))
    plane.nodes.remove("globex", globex_id)
    assert removed() == {("acme", acme_id, "web-1"), ("globex", globex_id, "db-1")}
    with pytest.raises(NotFound):
        plane.nodes.get("acme", acme_id)
    assert [v.record.host_id for v in plane.nodes.list("acme")] == [kept_id]
    clock.advance(timedelta(minutes=4, seconds=1))  # acme's tombstone is 5 min old
    assert removed() == {("globex", globex_id, "db-1")}
    clock.advance(timedelta(minutes=1))
    assert removed() == set()


def _in_process(handler: Handler) -> Invoke:
    async def invoke(event: Event) -> Event:
        return handler(event, None)

    return invoke

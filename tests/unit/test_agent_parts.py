"""Pieces of the node agent and proxy that need no sockets: labels, the tunnel registry."""

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.sshcert import CertType, Signer
from jumpgate.edge_proxy.registry import AmbiguousNode, Tunnel, TunnelRegistry, UnknownNode
from jumpgate.node_agent import identity as identity_store
from jumpgate.node_agent.agent import Agent
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.errors import AgentError
from jumpgate.node_agent.identity import Identity
from jumpgate.node_agent.labels import DynamicLabel, parse
from jumpgate.node_agent.retry import BACKOFF_MAX, backoff
from jumpgate.node_agent.tunnel_control import check_host_certificate, needs_renewal
from jumpgate.protocol import certs, ports
from jumpgate.protocol.outbox import Outbox
from jumpgate.protocol.tunnel import LISTEN_HOST


@pytest.mark.parametrize(
    ("text", "static", "dynamic"),
    [
        ("env=prod", {"env": "prod"}, []),
        ("env=prod,team=db", {"env": "prod", "team": "db"}, []),
        (
            'env=prod,arch=[1h:"uname -m"]',
            {"env": "prod"},
            [DynamicLabel("arch", timedelta(hours=1), ["uname", "-m"])],
        ),
        (
            "a=[5m:\"sh -c 'echo x,y'\"],b=2",
            {"b": "2"},
            [DynamicLabel("a", timedelta(minutes=5), ["sh", "-c", "echo x,y"])],
        ),
        ("", {}, []),
    ],
    ids=["one", "two", "dynamic", "comma-inside-command", "empty"],
)
def test_labels_parse(text: str, static: dict[str, str], dynamic: list[DynamicLabel]) -> None:
    assert parse(text) == (static, dynamic)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("env", "is not KEY=VALUE"),
        ("bad key=x", "is not KEY=VALUE"),
        ('arch=[30s:"uname -m"]', "at least 1m"),
        ("arch=[1h:]", "the command is empty"),
        ('arch=[1x:"uname"]', "invalid duration"),
    ],
    ids=["no-value", "space-in-key", "period-too-short", "empty-command", "bad-period"],
)
def test_labels_refuse(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_backoff_grows_to_thirty_seconds_with_jitter() -> None:
    assert 0.5 <= backoff(0) <= 1.0
    assert 4.0 <= backoff(3) <= 8.0
    for attempt in (5, 10, 50):
        assert BACKOFF_MAX / 2 <= backoff(attempt) <= BACKOFF_MAX


def _tunnel(tenant: str, host_id: str, name: str) -> Tunnel:
    connection: Any = object()  # the registry never touches the connection
    return Tunnel(
        tenant, host_id, name, connection, LISTEN_HOST, ports.NODE_SSH, "ssh-ed25519 AAAA"
    )


def test_registry_finds_by_name_uuid_and_qualified_uuid() -> None:
    registry = TunnelRegistry()
    web = _tunnel("acme", "u-1", "web-1")
    registry.add(web)
    assert registry.find("acme", "web-1") is web
    assert registry.find("acme", "WEB-1") is web
    assert registry.find("acme", "u-1") is web
    assert registry.find("acme", "u-1.acme") is web
    with pytest.raises(UnknownNode, match="node 'web-1' is not online in cluster 'globex'"):
        registry.find("globex", "web-1")


def test_registry_refuses_an_ambiguous_name_listing_candidates() -> None:
    registry = TunnelRegistry()
    registry.add(_tunnel("acme", "u-2", "web"))
    registry.add(_tunnel("acme", "u-1", "web"))
    with pytest.raises(AmbiguousNode, match=r"2 nodes are named 'web': use a uuid \(u-1, u-2\)"):
        registry.find("acme", "web")


def test_registry_keeps_the_newer_tunnel_of_a_node() -> None:
    registry = TunnelRegistry()
    old, new = _tunnel("acme", "u-1", "web-1"), _tunnel("acme", "u-1", "web-1")
    registry.add(old)
    assert registry.add(new) is old
    assert registry.remove(old) is False  # the old one closing must not drop the new one
    assert registry.find("acme", "u-1") is new
    assert registry.remove(new) is True
    assert len(registry) == 0


def _host_cert(ca: Any, key: Any, *, after: int, before: int, cert_type: Any = None) -> str:

    return Signer(ca).certify(
        key.public_key(),
        cert_type=cert_type or CertType.HOST,
        key_id="h",
        principals=["web-1"],
        valid_after=after,
        valid_before=before,
    )


def test_renewal_starts_when_a_third_of_the_lifetime_is_left() -> None:

    ca, key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    cert = _host_cert(ca, key, after=0, before=3000)
    assert not needs_renewal(cert, 1999)
    assert needs_renewal(cert, 2001)


def test_renewed_certificate_must_be_ours_and_from_the_host_ca() -> None:

    ca, key = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    identity = Identity(
        host_id="u-1",
        tenant="acme",
        nodename="web-1",
        auth_server="acme.localhost:3080",
        ca_pin="sha256:00",
        user_ca_keys=[],
        host_ca_keys=[certs.openssh_public(ca.public_key())],
        certificate="",
        insecure=True,
    )
    check_host_certificate(_host_cert(ca, key, after=0, before=2**40), identity, key)
    stranger = ed25519.Ed25519PrivateKey.generate()
    cases = [
        _host_cert(ca, stranger, after=0, before=2**40),  # someone else's key
        _host_cert(stranger, key, after=0, before=2**40),  # another CA
        _host_cert(ca, key, after=0, before=2**40, cert_type=CertType.USER),  # not a host cert
    ]
    for cert in cases:
        with pytest.raises(AgentError, match="another key or CA"):
            check_host_certificate(cert, identity, key)
    with pytest.raises(AgentError, match="invalid host certificate"):
        check_host_certificate("ssh-ed25519 AAAA", identity, key)


def test_outbox_keeps_the_newest_and_counts_what_it_dropped() -> None:
    box: Outbox[int] = Outbox(limit=10, batch=4)
    for n in range(15):
        box.put(n)
    assert box.dropped == 5
    assert box.peek() == [5, 6, 7, 8]


def test_outbox_sends_in_order_and_keeps_what_a_failed_send_did_not_take() -> None:
    box: Outbox[int] = Outbox(batch=3)
    for n in range(7):
        box.put(n)
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        if len(sent) == 1:
            sent.append([])  # the second send fails once
            raise OSError("tunnel down")
        sent.append(batch)

    assert asyncio.run(box.flush(send)) is False
    assert len(box) == 4  # the first batch went; the second stays
    assert asyncio.run(box.flush(send)) is True
    assert [n for batch in sent for n in batch] == list(range(7))
    assert len(box) == 0


def test_a_joined_node_follows_an_auth_server_it_is_given(tmp_path: Path) -> None:
    """A node joined at one address and started with another (the platform moved, or
    ``make up`` on other ports) uses the one it is given now and keeps it; the tunnel's
    address is learned again from the platform there. Before, it kept dialling the old one
    for ever (seen with ``make up WEB_PORT=...`` after a first run)."""
    key = ed25519.Ed25519PrivateKey.generate()
    host_ca = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    joined = Identity(
        host_id="u-1",
        tenant="acme",
        nodename="web-1",
        auth_server="acme.localhost:3080",
        ca_pin=certs.ca_pin(host_ca),
        user_ca_keys=[],
        host_ca_keys=[host_ca],
        certificate="",
        insecure=True,
        tunnel_public_addr="acme.localhost:3024",
    )
    identity_store.save(tmp_path, joined, key)
    moved = Agent(AgentConfig(data_dir=tmp_path, auth_server="acme.localhost:5080"))
    identity, _ = asyncio.run(moved._load_or_join())
    assert (identity.auth_server, identity.tunnel_public_addr) == ("acme.localhost:5080", "")
    stored = identity_store.load(tmp_path)
    assert stored is not None
    assert stored[0].auth_server == "acme.localhost:5080"
    same = Agent(AgentConfig(data_dir=tmp_path))  # given none: the stored one
    assert asyncio.run(same._load_or_join())[0].auth_server == "acme.localhost:5080"

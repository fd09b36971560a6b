"""Trust as key sets (decision 0022): a tenant's CA brings in a second key and makes it the
active one while the first stays trusted. Certificates signed by either key are accepted by
request authentication, by the proxy's SSH front and by a node's SSH server (real asyncssh on
127.0.0.1), and one signed by a key the tenant does not trust is refused by all three. A node
that joined with the first host CA key's pin keeps working as the host CA's set grows and
after the new key signs, without being given a new pin.

The platform is the handlers in-process (the ``platform`` fixture, both stores); the proxy
and the node are the real servers, started on loopback port 0.
"""

import argparse
import asyncio
import dataclasses
import os
import pwd
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.cli.jumpctl import status
from jumpgate.cli.jumpctl.context import Context
from jumpgate.control_plane.ca import CAKind, CertificateAuthority, PrivateKey, generate_key
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.edge_proxy.control import ControlPlaneClient
from jumpgate.edge_proxy.service import ProxyService
from jumpgate.node_agent.errors import AgentError, PinMismatch
from jumpgate.node_agent.identity import Identity
from jumpgate.node_agent.join import adopt, join, rediscover
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.server import NodeServer
from jumpgate.node_agent.tunnel_control import check_host_certificate
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from jumpgate.protocol.calls import Call
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.client import AsyncClient, Client
from jumpgate.protocol.trust import SignedTrust
from tests.functional.conftest import Platform, Session

pytestmark = pytest.mark.net

LOGIN = pwd.getpwuid(os.geteuid()).pw_name
"""The node serves the login it runs as (any login when root)."""


@dataclasses.dataclass
class Acme:
    """Tenant acme, whose admin alice may log in to nodes as ``LOGIN``."""

    platform: Platform
    totp: pyotp.TOTP

    def login(self) -> Session:
        """Alice logged in now, with a fresh key."""
        self.platform.next_code()
        session = Session("acme", "alice", self.totp)
        answer = self.platform.login(session)
        assert answer.status == 200, answer.body
        return session


@pytest.fixture
def acme(platform: Platform) -> Acme:
    """Acme on a platform whose clock reads real time (the SSH servers check validity by it),
    less ten minutes: each login moves it on by a TOTP step, never past real time here."""
    real = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    platform.clock.advance(real - platform.clock.now())
    alice = platform.signup("acme", platform.invite("acme", "alice", logins=[LOGIN]), "alice")
    return Acme(platform, alice.totp)


def _public(key: PrivateKey) -> str:
    return certs.openssh_public(key.public_key())


def _new_active_key(platform: Platform, kind: CAKind) -> PrivateKey:
    """A rotation's two steps: bring a new key in, then make it the one that signs."""
    key = generate_key(KeyType.ED25519)
    platform.plane.authorities.add_trusted("acme", kind, _public(key))
    platform.plane.authorities.activate("acme", kind, key, KeyType.ED25519)
    return key


def _three_certificates(acme: Acme) -> tuple[Session, Session, Session]:
    """Alice logged in before the user CA's new key (old), after it (new), and holding a
    certificate for her own user signed by a CA the tenant never trusted (stranger)."""
    platform = acme.platform
    old = acme.login()
    first_key = platform.call("GET", "/v1/ca").body["user_ca_keys"]
    new_key = _new_active_key(platform, "user")
    new = acme.login()
    record, _ = platform.plane.users.get("acme", "alice")
    stranger = Session("acme", "alice", old.totp)
    outsider = CertificateAuthority("user", KeyType.ED25519, generate_key(KeyType.ED25519))
    stranger.certificate, _ = outsider.sign_user(
        stranger.key.public_key(),
        tenant="acme",
        user="alice",
        user_id=record.id,
        roles=record.roles,
        logins=record.logins,
        now=platform.clock.now(),
        ttl=timedelta(hours=1),
    )
    assert _signer(old) == first_key[0]
    assert _signer(new) == _public(new_key)
    return old, new, stranger


def _signer(session: Session) -> str:
    cert = serialization.load_ssh_public_identity(session.certificate.encode())
    assert isinstance(cert, serialization.SSHCertificate)
    return certs.openssh_public(cert.signature_key())


async def _logs_in(port: int, session: Session) -> bool:
    """Whether an SSH server on ``port`` takes ``session``'s certificate for ``LOGIN``."""
    key = asyncssh.import_private_key(certs.openssh_private(session.key))
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(
                "127.0.0.1",
                port,
                username=LOGIN,
                client_keys=[(key, asyncssh.import_certificate(session.certificate))],
                known_hosts=None,
                agent_path=None,
                config=[],
                preferred_auth="publickey",
            ),
            20,
        )
    except asyncssh.PermissionDenied:
        return False
    conn.close()
    await conn.wait_closed()
    return True


def test_request_authentication_accepts_every_trusted_user_ca_key(acme: Acme) -> None:
    platform = acme.platform
    old, new, stranger = _three_certificates(acme)
    for session in (old, new):
        answer = platform.call("GET", "/v1/status", session=session)
        assert answer.status == 200, answer.body
    refused = platform.call("GET", "/v1/status", session=stranger)
    assert refused.status == 401
    assert refused.detail == "certificate was not issued by this cluster: run jump login against it"
    # /v1/ca and jumpctl status show both keys, the active one first
    ca = platform.call("GET", "/v1/ca").body
    assert ca["user_ca_keys"] == [_signer(new), _signer(old)]
    status = platform.call("GET", "/v1/status", session=new).body
    user_ca = next(c for c in status["cas"] if c["kind"] == "user")
    assert user_ca["fingerprint"] == certs.fingerprint(_signer(new))
    assert user_ca["trusted"] == [certs.fingerprint(_signer(new)), certs.fingerprint(_signer(old))]


def test_jumpctl_status_shows_the_keys_each_ca_trusts(
    acme: Acme, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, _ = _three_certificates(acme)
    context = Context(_InProcess(acme.platform, new), "acme.localhost:3080", False)
    assert status.run(context, argparse.Namespace(format="text")) == 0
    lines = capsys.readouterr().out.splitlines()
    host_ca = acme.platform.plane.authorities.get("acme", "host").public_key
    assert lines[2:] == [
        f"User CA  ed25519  {certs.fingerprint(_signer(new))}",
        f"         also trusted  {certs.fingerprint(_signer(old))}",
        f"Host CA  ed25519  {certs.fingerprint(host_ca)}",  # one key: shown as before
        f"CA pin   {certs.ca_pin(host_ca)}",
    ]


def test_the_proxy_accepts_every_trusted_user_ca_key(acme: Acme) -> None:
    platform = acme.platform
    old, new, stranger = _three_certificates(acme)
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    async def logins() -> list[bool]:
        fronts = ProxyService(
            ControlPlaneClient(invoke),
            proxy_id="proxy-1",
            host_key=asyncssh.generate_private_key("ssh-ed25519"),
            public_addr="localhost",
        )
        user_port, _ = await fronts.start(user=("127.0.0.1", 0), tunnel=("127.0.0.1", 0))
        try:
            return [await _logs_in(user_port, s) for s in (old, new, stranger)]
        finally:
            await fronts.close(drain=1)

    assert asyncio.run(asyncio.wait_for(logins(), 60)) == [True, True, False]
    # Removing the tenant forgets both keys: neither names a tenant any more
    platform.plane.tenants.remove("acme")
    control = ControlPlaneClient(invoke)
    for session in (old, new):
        assert asyncio.run(control.tenant_by_user_ca(_signer(session))) is None


T = TypeVar("T")


class _Events:
    """The node's audit sink, keeping what it is given."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def put(self, item: object, /) -> None:
        self.events.append(item)


class _InProcess(Client):
    """A client (jumpctl's, signed as ``session``), its requests answered by the platform's
    handler in-process and decoded as the real client decodes them."""

    def __init__(self, platform: Platform, session: Session | None = None) -> None:
        super().__init__("acme.localhost:3080")
        self._platform = platform
        self._session = session

    def send(self, call: Call[T]) -> T:
        return _answered(self, self._platform, self._session, call)


class _AsyncInProcess(AsyncClient):
    """The node's client, its requests answered by the platform's handler in-process."""

    def __init__(self, platform: Platform) -> None:
        super().__init__("acme.localhost:3080")
        self._platform = platform

    async def send(self, call: Call[T]) -> T:
        return _answered(self, self._platform, None, call)


def _answered(
    client: Client | AsyncClient, platform: Platform, session: Session | None, call: Call[T]
) -> T:
    path, _, query = call.target.partition("?")
    body = call.body.model_dump(mode="json") if call.body is not None else None
    response = platform.respond(call.route.method, path, body, query=query, session=session)
    return client._decode(call, response.status, response.body)


def _joined(acme: Acme) -> tuple[Identity, ed25519.Ed25519PrivateKey, str]:
    """A node joined with the host CA's pin as ``jumpctl nodes add`` gives it, and that pin."""
    platform, admin = acme.platform, acme.login()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body
    identity, key = asyncio.run(
        join(
            _AsyncInProcess(platform),
            token=token["token"],
            ca_pin=token["ca_pin"],
            nodename="web-1",
            insecure=False,
        )
    )
    return identity, key, token["ca_pin"]


def _pushed(platform: Platform) -> SignedTrust:
    """The trust document as the platform pushes it to a node's tunnel (no nonce)."""
    return platform.plane.authorities.trust_document(
        "acme",
        proxy_host_keys=list(platform.plane.settings.proxy_host_keys),
        tunnel_public_addr="acme.localhost:3024",
        ssh_public_addr="acme.localhost:3023",
        now=platform.clock.now(),
    )


def test_a_node_accepts_every_trusted_user_ca_key_once_it_adopts_the_document(
    acme: Acme, tmp_path: Path
) -> None:
    platform = acme.platform
    joined, _, _ = _joined(acme)
    old, new, stranger = _three_certificates(acme)
    assert _signer(new) not in joined.user_ca_keys  # it joined before the new key
    platform.clock.advance(timedelta(seconds=1))
    identity = adopt(joined, _pushed(platform))
    assert identity.user_ca_keys == [_signer(new), _signer(old)]
    events = _Events()
    uploads = Uploader(Spool(tmp_path), events)

    async def logins(node: Identity) -> list[bool]:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=lambda: NodeServer(node.user_ca_keys, events, uploads),
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            encoding=None,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            return [await _logs_in(port, s) for s in (old, new, stranger)]
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(asyncio.wait_for(logins(identity), 60)) == [True, True, False]
    # Before it adopted the document, the node knew only the key it joined with
    assert asyncio.run(asyncio.wait_for(logins(joined), 60)) == [True, False, False]


def test_a_node_joined_with_the_old_pin_keeps_working_as_the_host_ca_changes(
    acme: Acme,
) -> None:
    platform = acme.platform
    joined, key, pin = _joined(acme)
    client = _AsyncInProcess(platform)
    assert certs.ca_pin(joined.host_ca_keys[0]) == pin
    # The host CA brings a new key in: the document, still signed by the pinned key, lists both
    incoming = generate_key(KeyType.ED25519)
    platform.plane.authorities.add_trusted("acme", "host", _public(incoming))
    grown = asyncio.run(rediscover(client, joined))
    assert grown.host_ca_keys == [joined.host_ca_keys[0], _public(incoming)]
    # The new key signs from now on: the node checks it against the set it holds, not its pin
    platform.plane.authorities.activate("acme", "host", incoming, KeyType.ED25519)
    platform.clock.advance(timedelta(seconds=1))
    after = asyncio.run(rediscover(client, grown))
    assert after.ca_pin == pin  # never given another pin
    assert after.host_ca_keys == [_public(incoming), joined.host_ca_keys[0]]
    assert adopt(grown, _pushed(platform)).host_ca_keys == after.host_ca_keys
    # Its renewed host certificate is signed by the new key, and taken
    renewed = platform.plane.tokens.renew("acme", after.host_id)
    check_host_certificate(renewed, after, key)
    # A node that never learnt the new key trusts nothing it signs
    with pytest.raises(AgentError, match="another key or CA"):
        check_host_certificate(renewed, joined, key)
    with pytest.raises(PinMismatch, match=f"presents {certs.ca_pin(_public(incoming))}"):
        asyncio.run(rediscover(client, joined))
    with pytest.raises(PinMismatch, match="not by a host CA key this node trusts"):
        adopt(joined, _pushed(platform))


def test_a_pushed_document_older_than_the_one_held_is_refused(acme: Acme) -> None:
    platform = acme.platform
    joined, _, _ = _joined(acme)
    earlier = _pushed(platform)
    platform.clock.advance(timedelta(minutes=5))
    _new_active_key(platform, "user")
    held = adopt(joined, _pushed(platform))
    with pytest.raises(PinMismatch, match="before the one this node holds"):
        adopt(held, earlier)
    platform.invite("globex", "gina")
    globex = platform.plane.authorities.trust_document(
        "globex",
        proxy_host_keys=[],
        tunnel_public_addr="globex.localhost:3024",
        ssh_public_addr="globex.localhost:3023",
        now=platform.clock.now(),
    )
    with pytest.raises(PinMismatch, match="speaks for tenant 'globex'"):
        adopt(_also_trusting(held, globex), globex)


def _also_trusting(identity: Identity, signed: SignedTrust) -> Identity:
    """``identity`` also trusting the host CA key that signed ``signed`` (so that only the
    tenant check can refuse it)."""
    return dataclasses.replace(identity, host_ca_keys=[*identity.host_ca_keys, signed.signer])

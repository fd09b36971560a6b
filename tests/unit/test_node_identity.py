"""The node's identity on disk across releases, the join's certificate check, and the join
command ``jumpctl nodes add`` prints."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.cli.jumpctl.tokens import join_command
from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.node_agent import identity as identity_store
from jumpgate.node_agent.errors import AgentError, PinMismatch
from jumpgate.node_agent.join import check_certificate
from jumpgate.protocol import certs, models
from jumpgate.protocol.certs import KeyType

HOST_ID = "0f1e2d3c-0000-4000-8000-000000000001"


def _ca() -> CertificateAuthority:
    return CertificateAuthority("host", KeyType.ED25519, generate_key(KeyType.ED25519))


def _write(data_dir: Path, key: ed25519.Ed25519PrivateKey, fields: dict[str, Any]) -> None:
    directory = data_dir / "node"
    directory.mkdir(parents=True)
    (directory / "host_key").write_bytes(certs.openssh_private(key))
    (directory / "identity.json").write_text(json.dumps(fields))


def _before_signed_trust(ca: CertificateAuthority, *host_ca_keys: str) -> dict[str, Any]:
    """identity.json as releases before signed trust documents wrote it."""
    return {
        "host_id": HOST_ID,
        "tenant": "acme",
        "nodename": "web-1",
        "auth_server": "acme.localhost:3080",
        "ca_pin": certs.ca_pin(ca.public_key),
        "user_ca_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnsignedUserCA"],
        "host_ca_keys": list(host_ca_keys),
        "certificate": "ssh-ed25519-cert-v01@openssh.com AAAA",
        "insecure": True,
    }


def test_an_identity_from_before_keeps_only_what_its_pin_names(tmp_path: Path) -> None:
    ca, stranger = _ca(), _ca()
    key = ed25519.Ed25519PrivateKey.generate()
    _write(tmp_path, key, _before_signed_trust(ca, stranger.public_key, ca.public_key))
    loaded = identity_store.load(tmp_path)
    assert loaded is not None
    identity, _ = loaded
    assert identity.host_ca_keys == [ca.public_key]
    assert identity.user_ca_keys == []  # the first connection fills them in, signed
    assert (identity.proxy_host_keys, identity.tunnel_public_addr, identity.trust) == ([], "", None)


CANNOT_LOAD = {
    "no pinned host CA": (
        lambda ca: _before_signed_trust(ca, _ca().public_key),
        "holds no host CA key with the pin",
    ),
    "unknown field": (lambda ca: {**_before_signed_trust(ca), "extra": 1}, "join again"),
    "missing field": (
        lambda ca: {k: v for k, v in _before_signed_trust(ca).items() if k != "tenant"},
        "join again",
    ),
    "not a mapping": (lambda ca: ["host_id"], "join again"),
}


@pytest.mark.parametrize(("fields", "message"), CANNOT_LOAD.values(), ids=CANNOT_LOAD.keys())
def test_an_identity_this_release_cannot_trust_says_join_again(
    tmp_path: Path, fields: Any, message: str
) -> None:
    _write(tmp_path, ed25519.Ed25519PrivateKey.generate(), fields(_ca()))
    with pytest.raises(AgentError, match=message) as refused:
        identity_store.load(tmp_path)
    assert "join again" in str(refused.value)
    assert "\n" not in str(refused.value)


def _host_certificate(
    ca: CertificateAuthority, key: ed25519.Ed25519PrivateKey, host_id: str = HOST_ID
) -> str:
    return ca.sign_host(
        key.public_key(), tenant="acme", host_id=host_id, nodename="web-1", now=datetime.now(UTC)
    )


def test_the_joined_certificate_is_a_host_certificate_of_our_key_by_the_pinned_ca() -> None:
    ca, stranger = _ca(), _ca()
    key, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    pins = [certs.ca_pin(ca.public_key)]
    check_certificate(_host_certificate(ca, key), key, HOST_ID, pins)
    user_ca = CertificateAuthority("user", KeyType.ED25519, ca.private_key)
    user_cert, _ = user_ca.sign_user(
        key.public_key(),
        tenant="acme",
        user="alice",
        user_id="1",
        roles=[],
        logins=[HOST_ID],
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
    )
    for refused in (
        _host_certificate(stranger, key),  # another CA
        _host_certificate(ca, other),  # another key
        _host_certificate(ca, key, host_id="another-host"),  # another node
        user_cert,  # not a host certificate
    ):
        with pytest.raises(PinMismatch, match="not for this node's key"):
            check_certificate(refused, key, HOST_ID, pins)
    with pytest.raises(PinMismatch, match="invalid host certificate"):
        check_certificate("ssh-ed25519 AAAA", key, HOST_ID, pins)


@pytest.mark.parametrize("self_signed", [True, False], ids=["self-signed", "ca-issued"])
def test_the_join_command_keeps_the_token_off_the_command_line(self_signed: bool) -> None:
    answer = models.TokenCreated(
        token="0123456789abcdef0123",
        roles=[models.SystemRole.NODE],
        expires=datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
        ca_pin="sha256:ab",
        self_signed_web_certificate=self_signed,
    )
    env, argv = join_command(answer, "acme.example.sh:443")
    assert env == {"JUMPGATE_TOKEN": "0123456789abcdef0123"}
    assert not [arg for arg in argv if "0123456789abcdef0123" in arg]
    assert argv[:3] == ["jumpgate", "start", "--services=node"]
    assert "--ca-pin=sha256:ab" in argv
    assert ("--insecure" in argv) is self_signed

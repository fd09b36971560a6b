"""CA records as every state store keeps them (decision 0022): the active key, the trusted
keys and the rotation phase round-trip on SQLite and DynamoDB alike, and a record written
before key sets (a tenant created by an earlier release) reads as trusting its one key."""

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from jumpgate.control_plane import keys
from jumpgate.control_plane.ca import (
    Authorities,
    CAKind,
    CertificateAuthority,
    RotationPhase,
    generate_key,
)
from jumpgate.control_plane.errors import UnknownTenant
from jumpgate.control_plane.secrets import MasterKey, SecretBox
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _box() -> SecretBox:
    return SecretBox(MasterKey.from_bytes(secrets.token_bytes(32)))


def _record_before_key_sets(box: SecretBox, tenant: str, ca: CertificateAuthority) -> bytes:
    """A CA record exactly as releases before key sets wrote it: four fields, no set."""
    pem = ca.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return json.dumps(
        {
            "kind": ca.kind,
            "key_type": ca.key_type.value,
            "public_key": ca.public_key,
            "private_key": box.seal(pem, context=f"{tenant}/cas/{ca.kind}/private_key"),
        }
    ).encode()


def _new(kind: CAKind, key_type: KeyType = KeyType.ED25519) -> CertificateAuthority:
    return CertificateAuthority(kind, key_type, generate_key(key_type))


@pytest.mark.parametrize("kind", ["user", "host"])
def test_a_record_from_before_key_sets_trusts_its_one_key(store: Store, kind: CAKind) -> None:
    box = _box()
    old = _new(kind)
    store.put("acme", f"cas/{kind}", _record_before_key_sets(box, "acme", old))
    read = Authorities(store, box).get("acme", kind)
    assert read.public_key == old.public_key
    assert read.trusted_keys == [old.public_key]
    assert read.phase is RotationPhase.STANDBY
    assert read.private_key.public_key() == old.private_key.public_key()  # it still signs


def test_the_trust_document_of_an_old_tenant_lists_its_keys(store: Store) -> None:
    box = _box()
    user, host = _new("user"), _new("host")
    for ca in (user, host):
        store.put("acme", keys.ca(ca.kind), _record_before_key_sets(box, "acme", ca))
    authorities = Authorities(store, box)
    assert authorities.trusted_keys("acme") == ([user.public_key], [host.public_key])
    signed = authorities.trust_document(
        "acme", proxy_host_keys=[], tunnel_public_addr="a:1", ssh_public_addr="a:2", now=NOW
    )
    assert signed.signer == host.public_key


def test_trusted_keys_and_phase_round_trip(store: Store) -> None:
    """A key brought in, then made active: the store keeps the set, active first, each once;
    a fresh reader (no cache) sees what the writer wrote."""
    box = _box()
    old = _new("user")
    store.put("acme", keys.ca("user"), _record_before_key_sets(box, "acme", old))
    writer = Authorities(store, box)
    incoming = generate_key(KeyType.ECDSA_P256)  # another algorithm: the set may mix them
    incoming_public = certs.openssh_public(incoming.public_key())
    writer.add_trusted("acme", "user", incoming_public + " a comment")
    brought_in = Authorities(store, box).get("acme", "user")
    assert brought_in.public_key == old.public_key  # the old key still signs
    assert brought_in.trusted_keys == [old.public_key, incoming_public]

    writer.activate("acme", "user", incoming, KeyType.ECDSA_P256)
    raw = json.loads(store.get("acme", keys.ca("user")).value)
    assert raw["public_key"] == incoming_public
    assert raw["trusted_keys"] == [incoming_public, old.public_key]
    assert raw["rotation_phase"] == "standby"
    assert "PRIVATE KEY" not in raw["private_key"]  # sealed, never in clear
    read = Authorities(store, box).get("acme", "user")
    assert (read.public_key, read.key_type) == (incoming_public, KeyType.ECDSA_P256)
    assert read.trusted_keys == [incoming_public, old.public_key]
    assert read.phase is RotationPhase.STANDBY
    # The proxy finds the tenant of a user certificate by its CA key, as asyncssh writes it
    assert store.get(PLATFORM, keys.user_ca_index(incoming_public)).value == b"acme"


def test_a_certificate_is_signed_by_the_active_key(store: Store) -> None:
    box = _box()
    old = _new("user")
    store.put("acme", keys.ca("user"), _record_before_key_sets(box, "acme", old))
    authorities = Authorities(store, box)
    new_key = generate_key(KeyType.ED25519)
    ca = authorities.activate("acme", "user", new_key, KeyType.ED25519)
    subject = generate_key(KeyType.ED25519).public_key()
    line, _ = ca.sign_user(
        subject,
        tenant="acme",
        user="alice",
        user_id="u",
        roles=["access"],
        logins=["root"],
        now=NOW,
        ttl=timedelta(hours=1),
    )
    cert = serialization.load_ssh_public_identity(line.encode())
    assert isinstance(cert, serialization.SSHCertificate)
    assert certs.openssh_public(cert.signature_key()) == certs.openssh_public(new_key.public_key())


def test_changing_the_ca_of_an_unknown_tenant_says_so(store: Store) -> None:
    authorities = Authorities(store, _box())
    key = certs.openssh_public(generate_key(KeyType.ED25519).public_key())
    with pytest.raises(UnknownTenant):
        authorities.add_trusted("nosuch", "host", key)
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        authorities.add_trusted("nosuch", "host", "ssh-ed25519 nonsense")

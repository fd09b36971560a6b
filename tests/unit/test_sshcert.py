"""The certificate encoder, held to cryptography's own parser for every key type."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.control_plane.sshcert import CertType, PrivateKey, Signer
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType

KEYS: list[PrivateKey] = [
    ed25519.Ed25519PrivateKey.generate(),
    ec.generate_private_key(ec.SECP256R1()),
    ec.generate_private_key(ec.SECP384R1()),
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
]
KEY_IDS = ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa"]


@pytest.mark.parametrize("ca_key", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("subject_key", KEYS, ids=KEY_IDS)
def test_cryptography_parses_and_verifies_every_combination(
    ca_key: PrivateKey, subject_key: PrivateKey
) -> None:
    line = Signer(ca_key).certify(
        subject_key.public_key(),
        cert_type=CertType.USER,
        key_id="alice@acme",
        principals=["root", "ubuntu"],
        valid_after=1_700_000_000,
        valid_before=1_700_043_200,
        extensions={"permit-pty": "", "jumpgate-user": "alice", "jumpgate-tenant": "acme"},
        serial=42,
    )
    cert = load_ssh_public_identity(line.encode())
    assert isinstance(cert, SSHCertificate)
    cert.verify_cert_signature()
    assert cert.type is SSHCertificateType.USER
    assert cert.serial == 42
    assert cert.key_id == b"alice@acme"
    assert cert.valid_principals == [b"root", b"ubuntu"]
    assert (cert.valid_after, cert.valid_before) == (1_700_000_000, 1_700_043_200)
    assert cert.critical_options == {}
    assert cert.extensions == {
        b"jumpgate-tenant": b"acme",
        b"jumpgate-user": b"alice",
        b"permit-pty": b"",
    }
    assert certs.openssh_public(cert.signature_key()) == certs.openssh_public(ca_key.public_key())
    assert certs.openssh_public(cert.public_key()) == certs.openssh_public(subject_key.public_key())


def test_tampered_certificate_fails_verification() -> None:
    line = Signer(ed25519.Ed25519PrivateKey.generate()).certify(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        cert_type=CertType.HOST,
        key_id="h",
        principals=["web-1"],
        valid_after=0,
        valid_before=2**40,
    )
    name, blob = line.split()
    raw = bytearray(base64.b64decode(blob))
    index = raw.find(b"web-1")
    raw[index] = ord("X")
    cert = load_ssh_public_identity(f"{name} {base64.b64encode(bytes(raw)).decode()}".encode())
    assert isinstance(cert, SSHCertificate)
    with pytest.raises(InvalidSignature):
        cert.verify_cert_signature()


@pytest.mark.parametrize("key_type", list(KeyType), ids=[k.value for k in KeyType])
def test_authority_certificates(key_type: KeyType) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    user_ca = CertificateAuthority("user", key_type, generate_key(key_type))
    subject = ed25519.Ed25519PrivateKey.generate().public_key()
    line, valid_before = user_ca.sign_user(
        subject,
        tenant="acme",
        user="alice",
        user_id="0123abcd",
        roles=["access"],
        logins=[],
        now=now,
        ttl=timedelta(hours=1),
    )
    cert = load_ssh_public_identity(line.encode())
    assert isinstance(cert, SSHCertificate)
    cert.verify_cert_signature()
    assert valid_before == now + timedelta(hours=1)
    assert cert.valid_after == int((now - timedelta(minutes=1)).timestamp())
    assert cert.valid_principals[0].startswith(b"-jumpgate-nologin-")
    host_ca = CertificateAuthority("host", key_type, generate_key(key_type))
    host = load_ssh_public_identity(
        host_ca.sign_host(subject, tenant="acme", host_id="u-1", nodename="web-1", now=now).encode()
    )
    assert isinstance(host, SSHCertificate)
    host.verify_cert_signature()
    assert host.type is SSHCertificateType.HOST
    assert host.valid_principals == [b"u-1", b"u-1.acme", b"web-1"]

"""Names, durations, the CA pin and request signatures: the shared contract."""

import hashlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from jumpgate.protocol import certs, signing
from jumpgate.protocol.durations import format_duration, parse_duration
from jumpgate.protocol.names import (
    check_tenant_name,
    join_host_port,
    resolve_loopback,
    split_host_port,
    tenant_from_host,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("12h", timedelta(hours=12)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("1H", timedelta(hours=1)),
    ],
    ids=["seconds", "minutes", "hours", "compound", "days", "upper-case"],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m5", "5 m", "5x", "-5m", "5m3"], ids=repr)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="use a number and a unit"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(timedelta(minutes=90, seconds=5)) == "1h30m5s"
    assert format_duration(timedelta(0)) == "0s"


@pytest.mark.parametrize(
    "name", ["acme", "a", "acme-2", "x" * 63, "0day"], ids=["plain", "one", "dash", "max", "digit"]
)
def test_tenant_names_that_are_dns_labels(name: str) -> None:
    assert check_tenant_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-acme", "acme-", "Acme", "ac_me", "ac.me", "x" * 64, "_platform"],
    ids=["empty", "lead-dash", "trail-dash", "upper", "underscore", "dot", "too-long", "reserved"],
)
def test_tenant_names_that_are_not(name: str) -> None:
    with pytest.raises(ValueError, match="is not a DNS label"):
        check_tenant_name(name)


@pytest.mark.parametrize(
    ("host", "public", "tenant"),
    [
        ("acme.localhost:3080", "localhost", "acme"),
        ("ACME.localhost", "localhost", "acme"),
        ("acme.example.sh", "example.sh", "acme"),
        ("localhost:3080", "localhost", None),
        ("a.b.localhost", "localhost", None),
        ("acme.evil.sh", "example.sh", None),
        ("acmelocalhost", "localhost", None),
    ],
    ids=["port", "case", "domain", "bare", "nested", "other-domain", "no-dot"],
)
def test_tenant_from_host(host: str, public: str, tenant: str | None) -> None:
    assert tenant_from_host(host, public) == tenant


def test_localhost_names_resolve_to_loopback() -> None:
    assert resolve_loopback("acme.localhost") == "127.0.0.1"
    assert resolve_loopback("localhost.") == "127.0.0.1"
    assert resolve_loopback("example.sh") == "example.sh"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("h:1", ("h", 1)), ("h", ("h", 3080)), ("[::1]:22", ("::1", 22))],
    ids=["host-port", "default", "v6"],
)
def test_split_host_port(addr: str, expected: tuple[str, int]) -> None:
    assert split_host_port(addr, 3080) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::", "::1", "fe80::1%lo", "acme.localhost"])
def test_join_host_port_reads_back(host: str) -> None:
    """What the daemon logs (``":::4023"`` named no port one could give back)."""
    assert split_host_port(join_host_port(host, 4023), 0) == (host, 4023)


@pytest.mark.parametrize("addr", [":22", "h:0", "h:99999", "h:x"], ids=repr)
def test_split_host_port_refuses(addr: str) -> None:
    with pytest.raises(ValueError, match="address"):
        split_host_port(addr, 3080)


def test_ca_pin_is_sha256_of_der_spki() -> None:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert certs.ca_pin(certs.openssh_public(key)) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    path = tmp_path / "k.pub"
    path.write_text(key + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[1] == certs.fingerprint(key)


@pytest.mark.parametrize(
    "text",
    ["", "not a key", "ssh-ed25519 !!!", "ssh-dss AAAAB3NzaC1kc3MAAACBAP"],
    ids=["empty", "words", "bad-base64", "dsa"],
)
def test_load_public_key_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"OpenSSH public key|unsupported"):
        certs.load_public_key(text)


def test_load_public_key_refuses_small_rsa() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()  # noqa: S505
    with pytest.raises(ValueError, match="unsupported key type"):
        certs.load_public_key(certs.openssh_public(small))


@pytest.mark.parametrize(
    "key",
    [
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ],
    ids=["ed25519", "ecdsa", "rsa"],
)
def test_signature_covers_every_field(key: signing.PrivateKey) -> None:
    request = signing.SignedRequest(
        "POST", "acme.localhost:3080", "/v1/users", "", 1700000000, "n" * 16, b"{}"
    )
    signature = signing.sign(key, request)
    public = key.public_key()
    assert signing.verify(public, request, signature)
    for changed in (
        signing.SignedRequest(
            "DELETE", request.host, request.path, "", request.timestamp, request.nonce, b"{}"
        ),
        signing.SignedRequest(
            "POST",
            "globex.localhost:3080",
            request.path,
            "",
            request.timestamp,
            request.nonce,
            b"{}",
        ),
        signing.SignedRequest(
            "POST", request.host, "/v1/tokens", "", request.timestamp, request.nonce, b"{}"
        ),
        signing.SignedRequest(
            "POST", request.host, request.path, "a=1", request.timestamp, request.nonce, b"{}"
        ),
        signing.SignedRequest(
            "POST", request.host, request.path, "", request.timestamp + 1, request.nonce, b"{}"
        ),
        signing.SignedRequest(
            "POST", request.host, request.path, "", request.timestamp, "m" * 16, b"{}"
        ),
        signing.SignedRequest(
            "POST", request.host, request.path, "", request.timestamp, request.nonce, b"{ }"
        ),
    ):
        assert not signing.verify(public, changed, signature)
    assert not signing.verify(public, request, "not base64!")

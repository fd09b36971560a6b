"""The proxy's HTTPS certificate from the environment (as ECS injects it): both or neither,
and a certificate that does not load is one line naming where it came from."""

from pathlib import Path

import pytest

from jumpgate.edge_proxy import tls


def test_the_environments_certificate_is_used_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls.ensure_certificate(tmp_path / "made", "example.sh")
    monkeypatch.setenv(tls.CERT_VARIABLE, cert.read_text())
    monkeypatch.setenv(tls.KEY_VARIABLE, key.read_text())
    paths = tls.from_environment(tmp_path / "tls")
    assert paths is not None
    assert paths[0].read_text() == cert.read_text()
    assert paths[1].stat().st_mode & 0o777 == 0o600
    tls.proxy_context(tmp_path, "example.sh")  # loads


def test_half_or_bad_environment_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls.from_environment(tmp_path) is None
    monkeypatch.setenv(tls.CERT_VARIABLE, "-----BEGIN CERTIFICATE-----")
    with pytest.raises(ValueError, match="set both JUMPGATE_TLS_CERT and JUMPGATE_TLS_KEY"):
        tls.proxy_context(tmp_path, "example.sh")
    monkeypatch.setenv(tls.KEY_VARIABLE, "not a key")
    with pytest.raises(ValueError, match="are not a certificate and its key in PEM"):
        tls.proxy_context(tmp_path, "example.sh")


def test_self_signed_is_told_apart_from_a_certificate_a_ca_issued(tmp_path: Path) -> None:
    """``jumpctl nodes add`` prints --insecure only for a self-signed web certificate."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    made, _ = tls.ensure_certificate(tmp_path / "made", "example.sh")
    assert tls.is_self_signed(made)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    now = datetime.now(UTC)

    def signed_by_the_ca(issuer: str) -> bytes:
        """PEM of a certificate for ``*.example.sh`` naming ``issuer``, signed by the CA."""
        return (
            x509.CertificateBuilder()
            .subject_name(name("*.example.sh"))
            .issuer_name(name(issuer))
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    issued = tmp_path / "issued.crt"
    issued.write_bytes(signed_by_the_ca("Example CA"))
    assert not tls.is_self_signed(issued)
    assert tls.self_signed_sha256(issued) == ()
    # Its subject as issuer, but not signed by its own key: not self-signed either
    issued.write_bytes(signed_by_the_ca("*.example.sh"))
    assert not tls.is_self_signed(issued)
    assert not tls.is_self_signed(tmp_path / "missing.crt")


def test_a_self_signed_certificate_is_named_by_its_digest(tmp_path: Path) -> None:
    """The platform signs the digest of its self-signed web certificate into the trust
    document; a certificate a CA issued is verified by TLS and named by nothing."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    made, _ = tls.ensure_certificate(tmp_path / "made", "example.sh")
    der = x509.load_pem_x509_certificate(made.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert tls.self_signed_sha256(made) == (hashlib.sha256(der).hexdigest(),)
    missing = tmp_path / "missing.crt"
    assert tls.self_signed_sha256(missing) == ()

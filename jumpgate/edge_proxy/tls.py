"""The proxy's HTTPS certificate: self-signed for ``*.<public-addr>`` on first start.

On AWS the certificate comes from Secrets Manager instead; locally a self-signed one is
made once and kept (key 0600) in the data dir, and clients pass ``--insecure``. Whether the
certificate is self-signed is what tells ``jumpctl nodes add`` to print ``--insecure``.
"""

import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jumpgate.protocol.client import certificate_sha256

CERT_VARIABLE, KEY_VARIABLE = "JUMPGATE_TLS_CERT", "JUMPGATE_TLS_KEY"


def from_environment(directory: Path) -> tuple[Path, Path] | None:
    """The certificate and key in ``JUMPGATE_TLS_CERT``/``JUMPGATE_TLS_KEY`` (PEM, as ECS
    injects them from Secrets Manager), written (key 0600) where ``ssl`` can load them;
    ``None`` when they are not set."""
    cert, key = os.environ.get(CERT_VARIABLE, ""), os.environ.get(KEY_VARIABLE, "")
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError(f"set both {CERT_VARIABLE} and {KEY_VARIABLE}, or neither")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / "env.crt", directory / "env.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.strip() + "\n")
    cert_path.write_text(cert.strip() + "\n")
    return cert_path, key_path


def ensure_certificate(directory: Path, public_addr: str) -> tuple[Path, Path]:
    """Paths of the certificate and key, created if missing."""
    cert_path, key_path = directory / "proxy.crt", directory / "proxy.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    names: list[x509.GeneralName] = [
        x509.DNSName(public_addr),
        x509.DNSName(f"*.{public_addr}"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{public_addr}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for the certificate; ``ValueError`` naming the files when
    they are not a certificate and its key in PEM."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ValueError(
            f"{cert_path} and {key_path} are not a certificate and its key in PEM "
            f"({exc.reason or exc}); with {CERT_VARIABLE}/{KEY_VARIABLE}, check those"
        ) from exc
    return context


def proxy_certificate(data_dir: Path, public_addr: str) -> tuple[Path, Path]:
    """The proxy's certificate and key: the environment's, else the data dir's."""
    directory = data_dir / "tls"
    return from_environment(directory) or ensure_certificate(directory, public_addr)


def proxy_context(data_dir: Path, public_addr: str) -> ssl.SSLContext:
    """The proxy's HTTPS context: the environment's certificate, else the data dir's."""
    return server_context(*proxy_certificate(data_dir, public_addr))


def is_self_signed(cert_path: Path) -> bool:
    """Whether the (first) certificate in ``cert_path`` signs itself: then clients cannot
    verify it and need ``--insecure`` (which never weakens a node's CA pin)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def self_signed_sha256(cert_path: Path) -> tuple[str, ...]:
    """The digest (``certificate_sha256``) of the certificate in ``cert_path`` when it is
    self-signed, else none: the host CA signs it into the trust document, so an ``--insecure``
    node agent sends its join token only to a server presenting it."""
    if not is_self_signed(cert_path):
        return ()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return (certificate_sha256(cert.public_bytes(serialization.Encoding.DER)),)

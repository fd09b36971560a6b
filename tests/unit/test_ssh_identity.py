"""asyncssh keeps Jumpgate's certificate extensions once ``ssh_identity`` taught it them."""

from datetime import UTC, datetime, timedelta

import asyncssh
from asyncssh.public_key import SSHOpenSSHCertificate
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.ssh_identity import CertIdentity, cert_identity


class _Conn:
    """What ``cert_identity`` reads of a connection: the certificate's options."""

    def __init__(self, options: dict[str, object]) -> None:
        self._options = options

    def get_certificate_option(self, name: str, default: object = None) -> object:
        return self._options.get(name, default)


def test_jumpgate_extensions_survive_asyncssh_decoding() -> None:
    user_ca = CertificateAuthority("user", KeyType.ED25519, generate_key(KeyType.ED25519))
    line, _ = user_ca.sign_user(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        tenant="acme",
        user="alice",
        user_id="5eed",
        roles=["access", "admin"],
        logins=["root"],
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
    )
    cert = asyncssh.import_certificate(line)
    assert isinstance(cert, SSHOpenSSHCertificate)
    assert cert.options[certs.EXT_USER] == "alice"
    assert cert.options[certs.EXT_USER_ID] == "5eed"
    assert cert.options["permit-pty"] is True
    conn = _Conn(cert.options)
    assert cert_identity(conn) == CertIdentity("alice", "5eed")  # type: ignore[arg-type]
    assert cert_identity(_Conn({})) is None  # type: ignore[arg-type]

"""asyncssh keeps Jumpgate's certificate extensions once ``ssh_identity`` taught it them."""

import json
import time
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest
from asyncssh.public_key import SSHOpenSSHCertificate
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.control_plane.sshcert import CertType, Signer
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
    assert cert_identity(conn) == CertIdentity(  # type: ignore[arg-type]
        "alice", "5eed", roles=("access", "admin")
    )
    assert cert_identity(_Conn({})) is None  # type: ignore[arg-type]


def test_roles_traits_and_expiry_survive_asyncssh_decoding() -> None:
    """What the node decides with again (decision 0034), from a certificate as issued."""
    ca = ed25519.Ed25519PrivateKey.generate()
    line = Signer(ca).certify(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        cert_type=CertType.USER,
        key_id="alice@acme",
        principals=["root"],
        valid_after=0,
        valid_before=int(time.time()) + 60,
        extensions={
            certs.EXT_USER: "alice",
            certs.EXT_USER_ID: "5eed",
            certs.EXT_ROLES: "dev,access",
            certs.EXT_TRAITS: json.dumps({"logins": ["root", "ubuntu"]}),
            certs.EXT_VALID_BEFORE: "1767225600",
        },
    )
    cert = asyncssh.import_certificate(line)
    assert isinstance(cert, SSHOpenSSHCertificate)
    assert cert_identity(_Conn(cert.options)) == CertIdentity(  # type: ignore[arg-type]
        "alice",
        "5eed",
        roles=("dev", "access"),
        traits={"logins": ["root", "ubuntu"]},
        valid_before=1767225600,
    )


BAD_EXTENSIONS: list[tuple[dict[str, str], str, object]] = [
    ({certs.EXT_TRAITS: "not json"}, "traits", {}),
    ({certs.EXT_TRAITS: '["root"]'}, "traits", {}),
    ({certs.EXT_TRAITS: '{"logins": "root"}'}, "traits", {}),
    ({certs.EXT_VALID_BEFORE: "soon"}, "valid_before", None),
    ({certs.EXT_VALID_BEFORE: "-5"}, "valid_before", None),
    ({certs.EXT_ROLES: " , ,"}, "roles", ()),
    ({certs.EXT_ROLES: "dev,dev"}, "roles", ("dev",)),
]


@pytest.mark.parametrize(
    ("options", "attribute", "expected"),
    BAD_EXTENSIONS,
    ids=["traits-not-json", "traits-a-list", "traits-value-not-list", "expiry-a-word",
         "expiry-negative", "roles-empty", "roles-repeated"],
)  # fmt: skip
def test_an_extension_that_does_not_parse_gives_nothing(
    options: dict[str, str], attribute: str, expected: object
) -> None:
    identity = cert_identity(_Conn({certs.EXT_USER: "alice", **options}))  # type: ignore[arg-type]
    assert identity is not None
    assert getattr(identity, attribute) == expected

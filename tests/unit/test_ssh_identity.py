"""asyncssh keeps Jumpgate's certificate extensions once ``ssh_identity`` taught it them."""

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
    line, expires = user_ca.sign_user(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        tenant="acme",
        user="alice",
        user_id="5eed",
        roles=["access", "admin"],
        logins=["root"],
        now=datetime.now(UTC),
        ttl=timedelta(hours=1),
        traits={"logins": ["root"]},
    )
    cert = asyncssh.import_certificate(line)
    assert isinstance(cert, SSHOpenSSHCertificate)
    assert cert.options[certs.EXT_USER] == "alice"
    assert cert.options[certs.EXT_USER_ID] == "5eed"
    assert cert.options["permit-pty"] is True
    conn = _Conn(cert.options)
    assert cert_identity(conn) == CertIdentity(  # type: ignore[arg-type]
        "alice",
        "5eed",
        roles=("access", "admin"),
        traits={"logins": ("root",)},
        valid_before=int(expires.timestamp()),
    )
    assert cert_identity(_Conn({})) is None  # type: ignore[arg-type]


def _options(extensions: dict[str, str]) -> dict[str, object]:
    """The options asyncssh keeps of a certificate carrying ``extensions``."""
    line = Signer(ed25519.Ed25519PrivateKey.generate()).certify(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        cert_type=CertType.USER,
        key_id="alice@acme",
        principals=["root"],
        valid_after=1_700_000_000,
        valid_before=1_700_043_200,
        extensions={certs.EXT_USER: "alice", certs.EXT_USER_ID: "5eed", **extensions},
    )
    cert = asyncssh.import_certificate(line)
    assert isinstance(cert, SSHOpenSSHCertificate)
    return dict(cert.options)


POLICY_CASES = [
    (
        {
            certs.EXT_ROLES: "dev,auditor",
            certs.EXT_TRAITS: '{"logins": ["root", "ubuntu"]}',
            certs.EXT_VALID_BEFORE: "1700043200",
        },
        CertIdentity(
            "alice",
            "5eed",
            roles=("dev", "auditor"),
            traits={"logins": ("root", "ubuntu")},
            valid_before=1_700_043_200,
        ),
    ),
    ({}, CertIdentity("alice", "5eed")),
    (
        {certs.EXT_ROLES: "", certs.EXT_TRAITS: "not json", certs.EXT_VALID_BEFORE: "soon"},
        CertIdentity("alice", "5eed", valid_before=0),
    ),
    (
        {certs.EXT_TRAITS: '{"logins": "root", "teams": ["a", 3]}'},
        CertIdentity("alice", "5eed", traits={"teams": ("a",)}),
    ),
]


@pytest.mark.parametrize(
    ("extensions", "expected"),
    POLICY_CASES,
    ids=["all-three", "issued-before-them", "malformed-fails-closed", "non-list-traits-dropped"],
)
def test_roles_traits_and_expiry_read_from_the_certificate(
    extensions: dict[str, str], expected: CertIdentity
) -> None:
    identity = cert_identity(_Conn(_options(extensions)))  # type: ignore[arg-type]
    assert identity == expected


def test_traits_read_as_policy_code_takes_them() -> None:
    options = _options({certs.EXT_TRAITS: '{"logins": ["root"]}'})
    identity = cert_identity(_Conn(options))  # type: ignore[arg-type]
    assert identity is not None
    assert identity.trait_map() == {"logins": ["root"]}

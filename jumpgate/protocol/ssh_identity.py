"""Who an SSH connection's user certificate names, as asyncssh servers can read it.

asyncssh keeps only the certificate extensions it knows and gives server code no handle on
the certificate itself; what it keeps is readable after authentication with the public
``get_certificate_option``. Importing this module teaches it Jumpgate's identity extensions
(by adding decoders to asyncssh's table of user-certificate extensions, pinned with the
asyncssh version in pyproject.toml), so the proxy and the agent learn the Jumpgate user
behind a login, the roles and traits its certificate was issued with, and when it expires
(docs/decisions/0007, 0034).
"""

import json
from dataclasses import dataclass, field

import asyncssh
from asyncssh.packet import SSHPacket
from asyncssh.public_key import SSHOpenSSHCertificateV01

from jumpgate.protocol import certs

_EXTENSIONS = (
    certs.EXT_USER,
    certs.EXT_USER_ID,
    certs.EXT_ROLES,
    certs.EXT_TRAITS,
    certs.EXT_VALID_BEFORE,
)


def _decode_text(packet: SSHPacket) -> str:
    return packet.get_string().decode("utf-8", errors="replace") if packet else ""


for _name in _EXTENSIONS:
    SSHOpenSSHCertificateV01._user_extension_decoders[_name.encode()] = _decode_text


@dataclass(frozen=True)
class CertIdentity:
    """The Jumpgate user a connection's certificate was issued to, with the roles and
    traits it was issued with and its expiry (None in a certificate issued before 0034)."""

    user: str
    user_id: str
    roles: tuple[str, ...] = ()
    traits: dict[str, list[str]] = field(default_factory=dict)
    valid_before: int | None = None


def roles_of(text: object) -> tuple[str, ...]:
    """The role names of a ``jumpgate-roles`` extension (comma-separated)."""
    if not isinstance(text, str):
        return ()
    return tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def traits_of(text: object) -> dict[str, list[str]]:
    """The traits of a ``jumpgate-traits`` extension; a value that is not a JSON object of
    lists of strings gives none (the roles then expand to no login)."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        str(key): [str(item) for item in values]
        for key, values in parsed.items()
        if isinstance(values, list)
    }


def valid_before_of(text: object) -> int | None:
    """The expiry a ``jumpgate-valid-before`` extension gives, seconds since the epoch."""
    if not isinstance(text, str) or not text.strip().isdigit():
        return None
    return int(text.strip())


def cert_identity(conn: asyncssh.SSHServerConnection) -> CertIdentity | None:
    """The identity in the certificate ``conn`` authenticated with; None without one."""
    user = conn.get_certificate_option(certs.EXT_USER)
    if not isinstance(user, str) or not user:
        return None
    return CertIdentity(
        user,
        str(conn.get_certificate_option(certs.EXT_USER_ID, "")),
        roles=roles_of(conn.get_certificate_option(certs.EXT_ROLES)),
        traits=traits_of(conn.get_certificate_option(certs.EXT_TRAITS)),
        valid_before=valid_before_of(conn.get_certificate_option(certs.EXT_VALID_BEFORE)),
    )

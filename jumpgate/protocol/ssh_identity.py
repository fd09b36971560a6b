"""Who an SSH connection's user certificate names, as asyncssh servers can read it.

asyncssh keeps only the certificate extensions it knows and gives server code no handle on
the certificate itself; what it keeps is readable after authentication with the public
``get_certificate_option``. Importing this module teaches it Jumpgate's identity extensions
(by adding decoders to asyncssh's table of user-certificate extensions, pinned with the
asyncssh version in pyproject.toml), so the proxy and the agent learn the Jumpgate user
behind a login, the roles and traits it held at issue time and when the certificate runs
out (asyncssh keeps no validity where server code can read it). See docs/decisions/0007 and
0034.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import asyncssh
from asyncssh.packet import SSHPacket
from asyncssh.public_key import SSHOpenSSHCertificateV01

from jumpgate.protocol import certs

_EXTENSIONS = (certs.EXT_USER, certs.EXT_USER_ID)


def _text(packet: SSHPacket) -> str:
    return packet.get_string().decode("utf-8", errors="replace") if packet else ""


def _decode_text(packet: SSHPacket) -> str:
    return _text(packet)


def _decode_roles(packet: SSHPacket) -> tuple[str, ...]:
    return tuple(role for role in _text(packet).split(",") if role)


def _decode_traits(packet: SSHPacket) -> Mapping[str, tuple[str, ...]]:
    """The traits as a read-only map of tuples; anything but a JSON object of string lists
    reads as no traits (fewer logins, never more)."""
    try:
        raw = json.loads(_text(packet) or "{}")
    except ValueError:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        return MappingProxyType({})
    traits = {
        str(key): tuple(v for v in values if isinstance(v, str))
        for key, values in raw.items()
        if isinstance(values, list)
    }
    return MappingProxyType(traits)


def _decode_valid_before(packet: SSHPacket) -> int:
    """Seconds since the epoch; a value that is not a number reads as 0 (already expired),
    so a malformed certificate fails closed."""
    try:
        return int(_text(packet))
    except ValueError:
        return 0


for _name in _EXTENSIONS:
    SSHOpenSSHCertificateV01._user_extension_decoders[_name.encode()] = _decode_text
SSHOpenSSHCertificateV01._user_extension_decoders[certs.EXT_ROLES.encode()] = _decode_roles
SSHOpenSSHCertificateV01._user_extension_decoders[certs.EXT_TRAITS.encode()] = _decode_traits
SSHOpenSSHCertificateV01._user_extension_decoders[certs.EXT_VALID_BEFORE.encode()] = (
    _decode_valid_before
)


@dataclass(frozen=True)
class CertIdentity:
    """The Jumpgate user a connection's certificate was issued to, with what it held then."""

    user: str
    user_id: str
    roles: tuple[str, ...] = ()
    """The role names (``jumpgate-roles``) at issue time."""
    traits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The user's traits (``jumpgate-traits``), e.g. ``{"logins": ("root",)}``."""
    valid_before: int | None = None
    """``jumpgate-valid-before``: when the certificate runs out (epoch seconds); None for a
    certificate issued before the extension existed."""

    def trait_map(self) -> dict[str, list[str]]:
        """The traits as policy code reads them (``protocol.resources.TraitMap``)."""
        return {key: list(values) for key, values in self.traits.items()}


def cert_identity(conn: asyncssh.SSHServerConnection) -> CertIdentity | None:
    """The identity in the certificate ``conn`` authenticated with; None without one."""
    user = conn.get_certificate_option(certs.EXT_USER)
    if not isinstance(user, str) or not user:
        return None
    roles = conn.get_certificate_option(certs.EXT_ROLES, ())
    traits = conn.get_certificate_option(certs.EXT_TRAITS, {})
    valid_before = conn.get_certificate_option(certs.EXT_VALID_BEFORE)
    return CertIdentity(
        user,
        str(conn.get_certificate_option(certs.EXT_USER_ID, "")),
        roles=tuple(roles) if isinstance(roles, tuple) else (),
        traits=dict(traits) if isinstance(traits, Mapping) else {},
        valid_before=valid_before if isinstance(valid_before, int) else None,
    )

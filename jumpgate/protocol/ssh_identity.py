"""Who an SSH connection's user certificate names, as asyncssh servers can read it.

asyncssh keeps only the certificate extensions it knows and gives server code no handle on
the certificate itself; what it keeps is readable after authentication with the public
``get_certificate_option``. Importing this module teaches it Jumpgate's identity extensions
(by adding decoders to asyncssh's table of user-certificate extensions, pinned with the
asyncssh version in pyproject.toml), so the proxy and the agent learn the Jumpgate user
behind a login. See docs/decisions/0007.
"""

from dataclasses import dataclass

import asyncssh
from asyncssh.packet import SSHPacket
from asyncssh.public_key import SSHOpenSSHCertificateV01

from jumpgate.protocol import certs

_EXTENSIONS = (certs.EXT_USER, certs.EXT_USER_ID)


def _decode_text(packet: SSHPacket) -> str:
    return packet.get_string().decode("utf-8", errors="replace") if packet else ""


for _name in _EXTENSIONS:
    SSHOpenSSHCertificateV01._user_extension_decoders[_name.encode()] = _decode_text


@dataclass(frozen=True)
class CertIdentity:
    """The Jumpgate user a connection's certificate was issued to."""

    user: str
    user_id: str


def cert_identity(conn: asyncssh.SSHServerConnection) -> CertIdentity | None:
    """The identity in the certificate ``conn`` authenticated with; None without one."""
    user = conn.get_certificate_option(certs.EXT_USER)
    if not isinstance(user, str) or not user:
        return None
    return CertIdentity(user, str(conn.get_certificate_option(certs.EXT_USER_ID, "")))

"""The SSH algorithms every Jumpgate SSH endpoint offers and accepts (decision 0030).

asyncssh's defaults offer what a modern sshd no longer does: SHA-1 key exchange
(``diffie-hellman-group14-sha1``), group exchange down to 1024 bits, SHA-1 MACs, NIST-curve
key exchange, and ``ssh-rsa``/``ssh-dss`` in ``server-sig-algs``. The defaults here are what
OpenSSH 9.x offers by default (``sshd -T``), less what ssh-audit fails (SHA-1 MACs, the NIST
curves' key exchange) and less group exchange (its group sizes are the client's to ask),
with ML-KEM hybrid key exchange first, as OpenSSH 10 has it. ``sntrup761x25519-sha512``
is not offered: asyncssh has no implementation.

The proxy's listeners (users, tunnels, peers), its connections to peers, the node's server
and its tunnel to the proxy all use one ``Algorithms``; ``ciphers``, ``kex_algos`` and
``mac_algos`` of the config file replace a list (Teleport's keys), each name checked
against what asyncssh implements.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_certificate_algs, get_public_key_algs
from pydantic import AfterValidator, BeforeValidator

__all__ = [
    "CIPHERS",
    "HOST_KEY_ALGOS",
    "KEX_ALGOS",
    "MAC_ALGOS",
    "SIGNATURE_ALGOS",
    "Algorithms",
    "Ciphers",
    "KexAlgos",
    "MacAlgos",
    "check",
]

KEX_ALGOS = (
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)
CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
)
MAC_ALGOS = (
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)
SIGNATURE_ALGOS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
"""Signatures accepted from users and advertised in ``server-sig-algs`` (OpenSSH's
``PubkeyAcceptedAlgorithms`` without certificates): no SHA-1 (``ssh-rsa``, ``ssh-dss``)."""
HOST_KEY_ALGOS = (
    *(f"{name.removesuffix('@openssh.com')}-cert-v01@openssh.com" for name in SIGNATURE_ALGOS),
    *SIGNATURE_ALGOS,
)
"""Host keys a Jumpgate client accepts (OpenSSH's ``HostKeyAlgorithms``)."""

_KNOWN = {
    "ciphers": ("cipher", get_encryption_algs),
    "kex_algos": ("key exchange", get_kex_algs),
    "mac_algos": ("MAC", get_mac_algs),
}


BROKEN = re.compile(
    r"(sha1|md5|arcfour|3des|blowfish|cast128|seed-cbc|nistp|ecdh-sha2-1\.3|group1-|"
    r"gss-|rsa1024)"
)
"""Names asyncssh still implements that ssh-audit fails (SHA-1 and MD5, RC4, 64-bit block
ciphers, the NIST curves' key exchange, 1024-bit groups): a config never brings one back."""


def check(key: str, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` for the config key ``key`` (``ciphers``, ``kex_algos``, ``mac_algos``),
    each one asyncssh implements and none broken; else ``ValueError`` in one line naming the
    bad one and the valid ones."""
    what, known = _KNOWN[key]
    implemented = [name.decode() for name in known()]
    valid = [name for name in implemented if not BROKEN.search(name)]
    chosen = tuple(names)
    if not chosen:
        raise ValueError(f"name at least one {what}, or leave {key} out for the defaults")
    for name in chosen:
        if name in valid:
            continue
        why = "is broken (ssh-audit fails it)"
        if name not in implemented:
            why = f"is not a {what} this release offers"
        raise ValueError(f"{name[:60]!r} {why}; use: {', '.join(valid)}")
    return chosen


def _names(value: object) -> tuple[str, ...]:
    """A list of names, or one text of names split at commas (``aes256-ctr,aes128-ctr``)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(f"must be a list of algorithm names, not {value!r}")


def _valid(key: str) -> AfterValidator:
    def valid(names: tuple[str, ...]) -> tuple[str, ...]:
        return check(key, names) if names else names

    return AfterValidator(valid)


Ciphers = Annotated[tuple[str, ...], BeforeValidator(_names), _valid("ciphers")]
"""The type of a ``ciphers`` setting: names asyncssh implements; empty, the defaults."""
KexAlgos = Annotated[tuple[str, ...], BeforeValidator(_names), _valid("kex_algos")]
"""The type of a ``kex_algos`` setting."""
MacAlgos = Annotated[tuple[str, ...], BeforeValidator(_names), _valid("mac_algos")]
"""The type of a ``mac_algos`` setting."""


@dataclass(frozen=True)
class Algorithms:
    """What one endpoint offers; each list in order of preference."""

    kex: tuple[str, ...] = KEX_ALGOS  # key exchanges (``kex_algos``)
    ciphers: tuple[str, ...] = CIPHERS  # encryption (``ciphers``)
    macs: tuple[str, ...] = MAC_ALGOS  # MACs, unused with an AEAD cipher (``mac_algos``)
    signatures: tuple[str, ...] = field(default=SIGNATURE_ALGOS)  # user keys, server-sig-algs

    def __post_init__(self) -> None:
        check("kex_algos", self.kex)
        check("ciphers", self.ciphers)
        check("mac_algos", self.macs)
        known = {name.decode() for name in (*get_public_key_algs(), *get_certificate_algs())}
        unknown = [name for name in self.signatures if name not in known]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a signature algorithm this release offers")

    @classmethod
    def configured(
        cls,
        kex: Iterable[str] = (),
        ciphers: Iterable[str] = (),
        macs: Iterable[str] = (),
    ) -> "Algorithms":
        """The defaults, with each list the config file gives in place of its default."""
        return cls(
            kex=tuple(kex) or KEX_ALGOS,
            ciphers=tuple(ciphers) or CIPHERS,
            macs=tuple(macs) or MAC_ALGOS,
        )

    def server(self) -> dict[str, Any]:
        """Options of ``asyncssh.listen``/``run_server``: the host key algorithms follow the
        keys the server holds."""
        return {
            "kex_algs": list(self.kex),
            "encryption_algs": list(self.ciphers),
            "mac_algs": list(self.macs),
            "signature_algs": list(self.signatures),
        }

    def client(self, *, prefer: Iterable[str] = ()) -> dict[str, Any]:
        """Options of ``asyncssh.connect``; ``prefer``: ciphers tried first when offered
        (the tunnel's AES-GCM: AES-NI makes it the cheapest per byte)."""
        first = [name for name in prefer if name in self.ciphers]
        return {
            **self.server(),
            "encryption_algs": [*first, *(c for c in self.ciphers if c not in first)],
            "server_host_key_algs": list(HOST_KEY_ALGOS),
        }

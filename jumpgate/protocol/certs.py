"""Certificate extension names, CA key types, the CA pin, and what "a trusted CA key" means.

Identity travels in certificate *extensions*, not critical options: OpenSSH ignores
extensions it does not know but refuses certificates with unknown critical options.
"""

import base64
import binascii
import hashlib
from collections.abc import Iterable
from enum import StrEnum
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

EXT_USER = "jumpgate-user"
"""The Jumpgate user the certificate was issued to."""
EXT_USER_ID = "jumpgate-user-id"
"""The id of that user's record: a user removed and added again under the name has another."""
EXT_ROLES = "jumpgate-roles"
"""Comma-separated roles the user held at issue time."""
EXT_TENANT = "jumpgate-tenant"
"""The tenant (cluster) that issued the certificate."""
EXT_TRAITS = "jumpgate-traits"
"""The user's traits at issue time, JSON (``{"logins": ["root"]}``): what roles'
``{{internal.logins}}`` stand for when the node checks them again."""
EXT_VALID_BEFORE = "jumpgate-valid-before"
"""The certificate's own ``valid_before`` (seconds since the epoch), repeated where servers
can read it (asyncssh keeps extensions, not the validity): a node ends a session, and refuses
a new channel, when it has passed (docs/decisions/0034)."""

PERMIT_PTY = "permit-pty"
PERMIT_PORT_FORWARDING = "permit-port-forwarding"
PERMIT_AGENT_FORWARDING = "permit-agent-forwarding"

USER_CERT_DEFAULT_TTL_SECONDS = 12 * 3600
"""A login's certificate lives at most this long unless a role allows less."""
HOST_CERT_TTL_SECONDS = 7 * 24 * 3600
"""Host certificates are renewed by the agent well before this runs out."""


class KeyType(StrEnum):
    """CA key algorithms a tenant may choose."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    RSA_3072 = "rsa-3072"


PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def load_public_key(openssh: str) -> PublicKey:
    """Parse an OpenSSH public key line; raise ``ValueError`` if it is not one we accept."""
    try:
        key = serialization.load_ssh_public_key(openssh.strip().encode())
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm) as exc:
        raise ValueError("not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')") from exc
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise ValueError("unsupported key type: use Ed25519, ECDSA P-256/P-384 or RSA >= 2048 bits")


def openssh_private(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> bytes:
    """The OpenSSH private key file format (unencrypted: callers write it mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def openssh_public(key: PublicKey) -> str:
    """The OpenSSH one-line form of a public key."""
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def ca_pin(host_ca_public_key: str) -> str:
    """``sha256:`` + hex SHA-256 of the DER SubjectPublicKeyInfo of the host CA key."""
    der = load_public_key(host_ca_public_key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def fingerprint(openssh: str) -> str:
    """The ``SHA256:...`` fingerprint ``ssh-keygen -l`` prints for a public key."""
    blob = base64.b64decode(openssh.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return "SHA256:" + digest


def key_blob(openssh: str) -> bytes:
    """The key itself in an OpenSSH public key line (its base64 field, decoded): two lines
    naming one key with other comments, or other spacing, have the same blob. ``b""`` when
    the line holds no base64 field."""
    fields = openssh.split()
    if len(fields) < 2:
        return b""
    try:
        return base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        return b""


def is_trusted(key: str, trusted: Iterable[str]) -> bool:
    """Whether ``key`` (an OpenSSH public key line) is one of the CA keys ``trusted``.

    A CA is trusted as a *set* of keys, not one: during a rotation certificates signed by the
    outgoing and the incoming key are both valid (decision 0022). Every check of "is this
    signed by our CA" (request authentication, the proxy's and the node's SSH servers, the
    agent's renewed host certificate) goes through here so that none compares with one key.
    """
    blob = key_blob(key)
    return bool(blob) and any(blob == key_blob(candidate) for candidate in trusted)

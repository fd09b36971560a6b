"""Secrets at rest: envelope encryption under the platform master key.

Every secret (a CA private key, a TOTP seed) is encrypted with its own random 256-bit data
key under AES-256-GCM; the data key is itself encrypted (wrapped) with the master key. The
storage key of the secret is bound in as associated data, so a ciphertext copied to another
tenant's key, or another field, fails to open. The master key is a file (mode 0600) in the data
dir when embedded and a Secrets Manager secret on AWS; no KMS.

Errors: ``SecretUnreadable`` when a ciphertext was altered, moved or sealed under another key.
"""

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jumpgate.control_plane.errors import JumpgateError

_VERSION = 1
_KEY_BYTES = 32
MIN_SECRET_CHARS = 40


class SecretUnreadable(JumpgateError):
    """A sealed secret failed authentication: altered, moved, or a different master key."""


@dataclass(frozen=True)
class MasterKey:
    """The platform's key-encryption key and the id recorded beside each wrapped data key."""

    key: bytes
    key_id: str

    def __post_init__(self) -> None:
        if len(self.key) != _KEY_BYTES:
            raise ValueError("the master key must be 32 bytes (AES-256)")

    @classmethod
    def from_bytes(cls, key: bytes) -> "MasterKey":
        """A master key named by the first bytes of its own SHA-256 (not secret)."""
        return cls(key, hashlib.sha256(b"jumpgate-master-key-id" + key).hexdigest()[:16])


def load_or_create_master_key(path: Path) -> MasterKey:
    """Read the master key file, creating it (0600, exclusively) on first start."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(_KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_master_key(path)  # another process created it first
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(key) + b"\n")
        return MasterKey.from_bytes(key)
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others: run chmod 600 {path}")
    try:
        return MasterKey.from_bytes(base64.b64decode(raw.strip(), validate=True))
    except ValueError as exc:
        raise ValueError(f"{path} is not a Jumpgate master key (32 bytes, base64)") from exc


def master_key_from_secret(value: str, name: str) -> MasterKey:
    """The master key a Secrets Manager secret holds: 32 bytes in base64 (as the daemon's
    ``master.key``), or at least ``MIN_SECRET_CHARS`` random characters (as
    ``GenerateSecretString`` makes them), from which HKDF derives the key. ``ValueError``
    naming the secret otherwise."""
    value = value.strip()
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        key = b""
    if len(key) == _KEY_BYTES:
        return MasterKey.from_bytes(key)
    if len(value) >= MIN_SECRET_CHARS:
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"jumpgate-master-key")
        return MasterKey.from_bytes(derive.derive(value.encode()))
    raise ValueError(
        f"secret {name} must hold 32 random bytes in base64, "
        f"or at least {MIN_SECRET_CHARS} random characters"
    )


class SecretBox:
    """Seals and opens secrets under a master key; see the module docstring."""

    def __init__(self, master: MasterKey) -> None:
        self._master = master
        self._kek = AESGCM(master.key)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        """Encrypt ``plaintext`` bound to ``context`` (its storage key and field)."""
        data_key = AESGCM.generate_key(bit_length=256)
        aad = context.encode()
        wrap_nonce, nonce = os.urandom(12), os.urandom(12)
        envelope = {
            "v": _VERSION,
            "alg": "A256GCM",
            "kid": self._master.key_id,
            "wn": _b64(wrap_nonce),
            "wk": _b64(self._kek.encrypt(wrap_nonce, data_key, aad)),
            "n": _b64(nonce),
            "ct": _b64(AESGCM(data_key).encrypt(nonce, plaintext, aad)),
        }
        return json.dumps(envelope, separators=(",", ":"))

    def open(self, sealed: str, *, context: str) -> bytes:
        """Decrypt what ``seal`` made for the same ``context``."""
        try:
            envelope = json.loads(sealed)
            if envelope.get("v") != _VERSION or envelope.get("kid") != self._master.key_id:
                raise SecretUnreadable("secret was sealed under another master key")
            aad = context.encode()
            data_key = self._kek.decrypt(_unb64(envelope["wn"]), _unb64(envelope["wk"]), aad)
            return AESGCM(data_key).decrypt(_unb64(envelope["n"]), _unb64(envelope["ct"]), aad)
        except (InvalidTag, KeyError, ValueError, TypeError) as exc:
            raise SecretUnreadable("a stored secret failed authentication") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)

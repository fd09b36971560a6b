"""The node's identity on disk: host key, host certificate, tenant CA keys (files 0600).

::

    <data-dir>/node/identity.json     host id, tenant, name, CA keys, where the platform is
    <data-dir>/node/host_key          OpenSSH private key
    <data-dir>/node/host_key-cert.pub the host certificate

Once joined, the agent starts from these files and needs no token.
"""

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.node_agent.errors import AgentError
from jumpgate.protocol import certs
from jumpgate.protocol.trust import pin_of


@dataclass(frozen=True)
class Identity:
    """Who this node is and whom it trusts."""

    host_id: str
    tenant: str
    nodename: str
    auth_server: str  # HOST:PORT of the tenant's web endpoint
    ca_pin: str  # the pin it joined with: checked at join only
    user_ca_keys: list[str]  # every user CA key trusted now (a set: decision 0022)
    host_ca_keys: list[str]  # every host CA key trusted now
    certificate: str
    insecure: bool  # the platform's web certificate is self-signed (never weakens the pin)
    # What the host CA vouched for last (``protocol.trust``); empty in an identity written
    # before signed trust documents, which the first connection fills in.
    proxy_host_keys: list[str] = field(default_factory=list)
    tunnel_public_addr: str = ""  # HOST:PORT of the tunnel endpoint
    trust: dict[str, str] | None = None  # the signed document all this came from

    @property
    def host_ca_pins(self) -> list[str]:
        """The pins of every host CA key the node trusts now: a new trust document must be
        signed by one of them. ``ca_pin`` (the join pin) is checked at join only; afterwards
        this set, as the host CA last vouched for it, is what counts (decision 0022), so the
        node keeps working while it grows and after the pinned key retires."""
        return [p for p in (pin_of(k) for k in self.host_ca_keys) if p]

    def trusts_user_ca(self, key: str) -> bool:
        """Whether a user certificate signed by ``key`` may log in here."""
        return certs.is_trusted(key, self.user_ca_keys)

    def trusts_host_ca(self, key: str) -> bool:
        """Whether a host certificate (this node's, renewed) signed by ``key`` is the tenant's."""
        return certs.is_trusted(key, self.host_ca_keys)

    def trusted_as_before(self, other: "Identity") -> bool:
        """Whether ``other`` trusts exactly what this one does (documents aside)."""
        return dataclasses.replace(self, trust=None) == dataclasses.replace(other, trust=None)


def _directory(data_dir: Path) -> Path:
    return data_dir / "node"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def save(data_dir: Path, identity: Identity, key: ed25519.Ed25519PrivateKey) -> None:
    """Write the identity (key first, identity last, so a crash leaves no half identity)."""
    directory = _directory(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(directory / "host_key", certs.openssh_private(key))
    _write(directory / "host_key-cert.pub", identity.certificate.encode() + b"\n")
    _write(directory / "identity.json", json.dumps(asdict(identity), indent=2).encode())


def load(data_dir: Path) -> tuple[Identity, ed25519.Ed25519PrivateKey] | None:
    """The stored identity, or ``None`` if this node never joined."""
    directory = _directory(data_dir)
    try:
        data = json.loads((directory / "identity.json").read_text())
        raw_key = (directory / "host_key").read_bytes()
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise AgentError(
            f"{directory / 'identity.json'} is damaged: remove {directory} and join again"
        ) from exc
    key = serialization.load_ssh_private_key(raw_key, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AgentError(
            f"{directory / 'host_key'} is not an Ed25519 key: remove {directory} and join again"
        )
    known = {f.name for f in dataclasses.fields(Identity)}
    try:
        if not isinstance(data, dict) or set(data) - known:
            raise TypeError("unknown fields")
        identity = Identity(**data)
    except TypeError as exc:
        raise AgentError(
            f"{directory / 'identity.json'} is not one this release reads: remove {directory} "
            "and join again"
        ) from exc
    if identity.trust is None:
        identity = _from_before_signed_trust(identity, directory)
    return identity, key


def _from_before_signed_trust(identity: Identity, directory: Path) -> Identity:
    """An identity written before trust documents were signed: its CA keys came from an
    answer nothing authenticated, so keep only the host CA key its pin names (the next
    connection replaces the rest with what that CA signs), or refuse it."""
    pinned = [k for k in identity.host_ca_keys if pin_of(k) == identity.ca_pin]
    if not pinned:
        raise AgentError(
            f"{directory / 'identity.json'} holds no host CA key with the pin this node joined "
            f"with ({identity.ca_pin}): remove {directory} and join again"
        )
    return dataclasses.replace(identity, host_ca_keys=pinned, user_ca_keys=[])

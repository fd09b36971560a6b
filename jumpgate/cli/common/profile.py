"""The login profile under ``~/.jumpgate`` (``JUMPGATE_HOME`` overrides).

One profile per cluster address, as ``tsh`` keeps one per proxy::

    $JUMPGATE_HOME/current-profile            the address of the active profile
    $JUMPGATE_HOME/profiles/<addr>/profile.json
    $JUMPGATE_HOME/profiles/<addr>/key         private key, 0600 (OpenSSH format)
    $JUMPGATE_HOME/profiles/<addr>/key.pub
    $JUMPGATE_HOME/profiles/<addr>/key-cert.pub
    $JUMPGATE_HOME/profiles/<addr>/known_hosts @cert-authority line for the host CA
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.cli.common.errors import CLIError
from jumpgate.protocol import certs
from jumpgate.protocol.names import resolve_loopback
from jumpgate.protocol.signing import PrivateKey


def home() -> Path:
    """Where profiles live."""
    configured = os.environ.get("JUMPGATE_HOME")
    return Path(configured) if configured else Path.home() / ".jumpgate"


@dataclass(frozen=True)
class Profile:
    """A logged-in session with one cluster."""

    proxy: str  # HOST:PORT of the cluster's web endpoint, e.g. acme.localhost:3080
    tenant: str
    user: str
    roles: list[str]
    logins: list[str]
    valid_before: str  # ISO 8601, UTC
    insecure: bool  # accept the proxy's self-signed HTTPS certificate
    ca_pin: str
    ssh_proxy: str = ""  # HOST:PORT of the proxy's SSH listener
    proxy_host_keys: list[str] = field(default_factory=list)
    host_ca_keys: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return home() / "profiles" / self.proxy.replace(":", "_")

    @property
    def key_path(self) -> Path:
        return self.directory / "key"

    @property
    def cert_path(self) -> Path:
        return self.directory / "key-cert.pub"

    @property
    def known_hosts_path(self) -> Path:
        return self.directory / "known_hosts"

    def expires(self) -> datetime:
        return datetime.fromisoformat(self.valid_before)

    def private_key(self) -> PrivateKey:
        key = serialization.load_ssh_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        return key

    def certificate(self) -> str:
        return self.cert_path.read_text().strip()


def new_key() -> ed25519.Ed25519PrivateKey:
    """The key a login certifies; generated on this machine, never sent anywhere."""
    return ed25519.Ed25519PrivateKey.generate()


def save(profile: Profile, key: ed25519.Ed25519PrivateKey, certificate: str) -> None:
    """Write the profile, key (0600) and certificate, and make it the current one."""
    directory = profile.directory
    # Each level 0700 (``parents=True`` would make ~/.jumpgate and profiles/ 0755)
    for level in (home(), home() / "profiles", directory):
        level.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(profile.key_path, certs.openssh_private(key), 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(directory / "key.pub", public + b"\n", 0o644)
    _write(profile.cert_path, certificate.encode() + b"\n", 0o644)
    _write(profile.known_hosts_path, known_hosts(profile).encode(), 0o644)
    _write(directory / "profile.json", json.dumps(asdict(profile), indent=2).encode(), 0o600)
    _write(home() / "current-profile", profile.proxy.encode() + b"\n", 0o600)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start (no window where a key is readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def current() -> Profile:
    """The active profile; ``CLIError`` telling how to log in when there is none."""
    pointer = home() / "current-profile"
    try:
        proxy = pointer.read_text().strip()
        data = json.loads(
            (home() / "profiles" / proxy.replace(":", "_") / "profile.json").read_text()
        )
        return Profile(**data)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise CLIError("not logged in: run jump login --proxy=CLUSTER:3080") from exc


def remove(profile: Profile) -> None:
    """Delete the profile's files and forget it as current."""
    shutil.rmtree(profile.directory, ignore_errors=True)
    pointer = home() / "current-profile"
    if pointer.exists() and pointer.read_text().strip() == profile.proxy:
        pointer.unlink()


def known_hosts(profile: Profile) -> str:
    """Trust for plain OpenSSH: the proxy's own key, and the tenant host CA for its nodes."""
    host = profile.proxy.rsplit(":", 1)[0]
    lines = [f"@cert-authority *.{host},{host} {ca}\n" for ca in profile.host_ca_keys]
    if profile.ssh_proxy:
        ssh_host, _, port = profile.ssh_proxy.rpartition(":")
        names = {f"[{ssh_host}]:{port}", f"[{resolve_loopback(ssh_host)}]:{port}"}
        lines += [f"{','.join(sorted(names))} {key}\n" for key in profile.proxy_host_keys]
    return "".join(lines)

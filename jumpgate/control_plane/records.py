"""Stored records: JSON dataclasses with timestamps as ISO 8601 strings.

Each record class names its fields once; ``to_bytes``/``from_bytes`` are the only
(de)serialisation, so a record cannot be written in two shapes.
"""

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self, TypeVar

from jumpgate.control_plane.errors import Conflict
from jumpgate.control_plane.store.base import RevisionMismatch, Store

CAS_ATTEMPTS = 20


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class Record:
    """Mixin for frozen dataclasses stored as JSON."""

    _datetimes: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        data = {k: _encode(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        data = json.loads(raw)
        for name in cls._datetimes:
            if data.get(name) is not None:
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)


@dataclass(frozen=True)
class TenantRecord(Record):
    """A tenant in the platform registry."""

    name: str
    created: datetime
    ca_key_type: str
    _datetimes = ("created",)


@dataclass(frozen=True)
class CARecord(Record):
    """A CA of one tenant: the active key pair, which signs, and the public keys trusted when
    verifying (decision 0022). A record written before key sets has neither ``trusted_keys``
    nor ``rotation_phase``: it reads as trusting its one key, in phase ``standby``."""

    kind: str  # user, host (a tenant's) or proxy (the platform's)
    key_type: str  # the active key's algorithm (``certs.KeyType``)
    public_key: str  # the active key, OpenSSH form
    private_key: str  # the active key, PKCS#8 PEM sealed with the master key
    trusted_keys: list[str] = field(default_factory=list)  # OpenSSH keys, active first
    rotation_phase: str = "standby"  # ``ca.RotationPhase``


@dataclass(frozen=True)
class UserRecord(Record):
    """A user of one tenant; ``password_hash`` is unset until signup."""

    name: str
    roles: list[str]
    logins: list[str]
    created: datetime
    id: str = ""  # random per user record: a namesake added later cannot use old certificates
    password_hash: str | None = None
    totp_secret: str | None = None  # sealed with the master key
    last_otp_step: int = -1  # the newest TOTP time step used; older or equal is a replay
    failed_logins: int = 0
    locked_until: datetime | None = None  # failed logins: no new certificate until then
    invite: str | None = None  # storage key of the pending invite
    lock_message: str | None = None  # set while an admin has locked the user out entirely
    lock_expires: datetime | None = None  # when that lock lifts; None: when unlocked
    _datetimes = ("created", "locked_until", "lock_expires")

    def locked(self, now: datetime) -> bool:
        """Locked out of logging in, by failed logins."""
        return self.locked_until is not None and self.locked_until > now

    def access_lock(self, now: datetime) -> str | None:
        """The admin's message while the user is locked out of everything, else None."""
        if self.lock_message is None:
            return None
        if self.lock_expires is not None and self.lock_expires <= now:
            return None
        return self.lock_message


@dataclass(frozen=True)
class InviteRecord(Record):
    """An invite to set a password; kept a day past ``expires`` to say it expired."""

    user: str
    expires: datetime
    _datetimes = ("expires",)


@dataclass(frozen=True)
class TokenRecord(Record):
    """A join token; after ``jumpctl tokens rm`` a tombstone says it was deleted."""

    token: str  # sealed with the master key: shown by tokens ls, never stored in clear
    roles: list[str]
    expires: datetime
    created: datetime
    deleted: datetime | None = None
    _datetimes = ("expires", "created", "deleted")


@dataclass(frozen=True)
class NodeRecord(Record):
    """A node that joined the tenant, and where its tunnel is.

    Presence is written when it changes (tunnel up on a proxy, tunnel down), never per
    heartbeat: a node is online while ``proxy`` names a proxy that is itself alive.
    """

    host_id: str
    nodename: str
    joined: datetime
    public_key: str = ""  # the host key it joined with; its tunnel must present it
    labels: dict[str, str] = field(default_factory=dict)
    hostname: str = ""
    addr: str = ""
    version: str = ""
    proxy: str | None = None  # the proxy holding its tunnel, None when down
    seen: datetime | None = None  # when presence last changed
    _datetimes = ("joined", "seen")


@dataclass(frozen=True)
class NodeRemoval(Record):
    """A node removed a moment ago, kept a few minutes for the proxies that poll removals."""

    tenant: str
    host_id: str
    nodename: str
    removed: datetime
    _datetimes = ("removed",)


@dataclass(frozen=True)
class ProxyRecord(Record):
    """A proxy's own liveness, refreshed once a minute for all its tunnels at once."""

    proxy_id: str
    alive_until: datetime
    peer_addr: str = ""  # HOST:PORT where other proxies reach it; empty if it does not peer
    _datetimes = ("alive_until",)


R = TypeVar("R", bound=Record)


def update(
    store: Store, tenant: str, key: str, kind: type[R], change: Callable[[R], R | None]
) -> R | None:
    """Read the record at ``key``, ``change`` it and compare-and-swap it back, retrying when
    another writer got there first.

    ``change`` may raise, or return ``None`` to write nothing (then ``None`` is returned).
    ``KeyNotFound`` if the record is absent; ``Conflict`` if every attempt lost a race.
    """
    for _ in range(CAS_ATTEMPTS):
        item = store.get(tenant, key)
        updated = change(kind.from_bytes(item.value))
        if updated is None:
            return None
        try:
            store.compare_and_swap(tenant, key, updated.to_bytes(), revision=item.revision)
            return updated
        except RevisionMismatch:
            time.sleep(0.002)
    raise Conflict(f"{key} is being changed by someone else: try again")

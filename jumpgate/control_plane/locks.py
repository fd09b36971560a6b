"""Locks: whom a tenant stops at once, at every hop, until a lock expires or is removed.

A lock names a user, a role, a node or a login (or several, all of which must match). It
refuses matching API calls (user and role locks), logins and new SSH connections, and the
proxies and nodes end the live sessions it matches within seconds: proxies read every lock
in force (``feed``) each second and tell their nodes (docs/decisions/0034).

Locks live in the platform scope under their tenant (``locks/<tenant>/<id>``, built only by
``keys``), so that one listing answers every proxy; every call still names its tenant, and a
tenant's calls read only its own prefix. An expired lock is absent at once, whatever the
store's sweep.

Removing a user adds a lock on that user's id (not name: a namesake invited later is not
stopped), kept as long as a certificate can live, so connections already open end too.
"""

import builtins
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from jumpgate.control_plane import keys
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import InvalidRequest, NotFound
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import (
    AtomicWriteFailed,
    Create,
    Delete,
    Item,
    KeyNotFound,
    Put,
)
from jumpgate.protocol.policy import Subject, lock_applies, lock_message
from jumpgate.protocol.resources import MAX_SESSION_TTL, Lock, LockSpec, LockTarget, Metadata

MAX_LOCKS = 1000
"""Locks one tenant may hold at once."""
FEED_PAGE = 500
"""Locks in one answer to a proxy (about 450 bytes each: far below a Lambda's 6 MB)."""


@dataclass(frozen=True)
class TenantLock:
    tenant: str
    lock: Lock


@dataclass(frozen=True)
class FeedPage:
    """One page of every lock in force; ``cursor`` for the next, ``None`` at the end."""

    locks: list[TenantLock]
    cursor: str | None


def policy_revision(store: Store) -> str:
    """The platform's policy revision: it moves with every lock and role written."""
    try:
        return store.get(PLATFORM, keys.POLICY_REVISION).value.decode()
    except KeyNotFound:
        return "0"  # never written: still a revision, so that "" means "none held"


def policy_moved() -> Put:
    """The write that moves the platform's policy revision, made in one atomic write with
    the lock or roles revision it is for: what is written is never what the proxies are
    not told of. The feed reads the revision before its listing, so a proxy never holds a
    new revision with what was there before it."""
    return Put(keys.POLICY_REVISION, secrets.token_hex(8).encode())


def message_of(lock: Lock) -> str:
    """What a stopped user reads (``policy.lock_message``: the proxy and node say the same)."""
    return lock_message(lock)


@lru_cache(maxsize=4096)
def _lock_of(raw: bytes) -> Lock:
    """A stored lock, parsed once: proxies read every lock each second."""
    return Lock.model_validate_json(raw)


class LockService:
    """A tenant's locks, and every lock in force for the proxies."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create(
        self,
        tenant: str,
        target: LockTarget,
        *,
        message: str = "",
        ttl: timedelta | None = None,
        expires: datetime | None = None,
        created_by: str = "",
    ) -> Lock:
        """A new lock in force from now until ``ttl`` or ``expires`` (else until removed)."""
        now = self._clock.now()
        if ttl is not None and expires is not None:
            raise InvalidRequest("give a lock --ttl or --expires, not both")
        if ttl is not None:
            expires = now + ttl
        if expires is not None and expires <= now:
            raise InvalidRequest("lock expiry is in the past: give a time to come, or a --ttl")
        if len(self.list(tenant)) >= MAX_LOCKS:
            raise InvalidRequest(f"cluster has {MAX_LOCKS} locks: remove some first")
        lock = Lock(
            metadata=Metadata(name=secrets.token_hex(8)),
            spec=LockSpec(
                target=target,
                message=" ".join(message.split()),
                expires=expires,
                created_by=created_by,
            ),
        )
        written = Create(keys.lock(tenant, lock.name), lock.model_dump_json().encode(), expires)
        self._store.atomic_write(PLATFORM, [written, policy_moved()])
        return lock

    def user_removed(self, tenant: str, user: str, user_id: str, *, by: str = "") -> Lock:
        """Stop the connections of a user just removed, for as long as a certificate lives."""
        return self.create(
            tenant,
            LockTarget(user=user, user_id=user_id),
            message=f"user {user!r} was removed",
            ttl=MAX_SESSION_TTL,
            created_by=by,
        )

    def list(self, tenant: str) -> list[Lock]:
        """The tenant's locks in force, oldest expiry last."""
        return self._alive(
            _lock_of(item.value)
            for item in self._store.list_all(PLATFORM, keys.tenant_locks(tenant))
        )

    def remove(self, tenant: str, lock_id: str) -> Lock:
        """Lift a lock; ``NotFound`` if it is not (or no longer) in force."""
        for lock in self.list(tenant):
            if lock.name == lock_id:
                try:
                    self._store.atomic_write(
                        PLATFORM, [Delete(keys.lock(tenant, lock_id)), policy_moved()]
                    )
                except AtomicWriteFailed:  # removed (or expired) since it was listed
                    break
                return lock
        raise NotFound(f"lock {lock_id!r} not found: see jumpctl get locks")

    def matching(self, tenant: str, subject: Subject) -> Lock | None:
        """The first lock in force that stops ``subject``."""
        for lock in self.list(tenant):
            if lock_applies(lock.spec.target, subject):
                return lock
        return None

    def feed(self) -> builtins.list[TenantLock]:
        """Every lock in force on the platform, with its tenant."""
        return self._in_force(self._store.list_all(PLATFORM, keys.LOCKS))

    def feed_page(self, cursor: str | None = None) -> FeedPage:
        """``FEED_PAGE`` locks of the platform at most, from ``cursor`` (for proxies)."""
        page = self._store.list(PLATFORM, keys.LOCKS, limit=FEED_PAGE, cursor=cursor or None)
        return FeedPage(self._in_force(page.items), page.cursor)

    def _in_force(self, items: Iterable[Item]) -> builtins.list[TenantLock]:
        found = []
        for item in items:
            tenant = item.key.removeprefix(keys.LOCKS).split("/", 1)[0]
            found.append(TenantLock(tenant, _lock_of(item.value)))
        now = self._clock.now()
        return [t for t in found if t.lock.spec.expires is None or t.lock.spec.expires > now]

    def _alive(self, locks: Iterable[Lock]) -> builtins.list[Lock]:
        now = self._clock.now()
        return [lock for lock in locks if lock.spec.expires is None or lock.spec.expires > now]

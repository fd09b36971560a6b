"""The key-value interface of the state store, in the manner of Teleport's backend.

Keys are paths under a tenant: a store call names the tenant first and a key relative to it
(``users/alice``); the implementation keeps every tenant's items under its own prefix
(``/tenants/acme/users/alice``) and, on DynamoDB, in its own partition. Only the operator's
tenant administration uses the ``PLATFORM`` scope.

Items may expire. An expired item is absent to every operation at once, whether or not the
backend has swept it yet (DynamoDB deletes expired items up to days late, moto never).
Expiry has a granularity of one second.

Errors::

    KeyNotFound(NotFound)           get/delete/CAS of an absent key
    KeyExists(AlreadyExists)        create of a present key
    RevisionMismatch(Conflict)      CAS or conditional delete lost to another writer
    AtomicWriteFailed(Conflict)     a condition of an atomic write did not hold
"""

from __future__ import annotations

import base64
import builtins
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from jumpgate.control_plane.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from jumpgate.protocol.names import check_tenant_name

PLATFORM = "_platform"
"""The scope of platform-wide items (the tenant registry); not a valid tenant name."""

MAX_ATOMIC_OPS = 25
"""Atomic writes are for a few items; DynamoDB transactions cap at 100."""

MAX_PAGE = 1000

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+=:-]*(/[A-Za-z0-9._@+=:-]+)*$")


class KeyNotFound(NotFound):
    """The key is absent (or expired)."""


class KeyExists(AlreadyExists):
    """The key is present already."""


class RevisionMismatch(Conflict):
    """The item changed since the revision the caller read."""


class AtomicWriteFailed(Conflict):
    """One of an atomic write's conditions did not hold; nothing was written."""


@dataclass(frozen=True)
class Item:
    """A stored value with the revision that names this version of it."""

    key: str
    value: bytes
    revision: str
    expires: datetime | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing; pass ``cursor`` back for the next, ``None`` at the end."""

    items: list[Item]
    cursor: str | None


@dataclass(frozen=True)
class Put:
    """Write unconditionally."""

    key: str
    value: bytes
    expires: datetime | None = None


@dataclass(frozen=True)
class Create:
    """Write only if the key is absent (or expired)."""

    key: str
    value: bytes
    expires: datetime | None = None


@dataclass(frozen=True)
class CompareAndSwap:
    """Write only if the key is present at ``revision``."""

    key: str
    value: bytes
    revision: str
    expires: datetime | None = None


@dataclass(frozen=True)
class Delete:
    """Delete, only at ``revision`` when one is given; the key must be present."""

    key: str
    revision: str | None = None


Op = Put | Create | CompareAndSwap | Delete


def partition(tenant: str) -> str:
    """The partition (DynamoDB hash key, SQLite ``pk``) of a tenant's items."""
    if tenant == PLATFORM:
        return "/platform"
    return "/tenants/" + check_tenant_name(tenant)


def check_key(key: str) -> str:
    """Refuse keys that could escape their prefix or collide (``..``, ``//``, odd bytes)."""
    if len(key) > 512 or not _KEY.fullmatch(key) or "/../" in f"/{key}/" or "/./" in f"/{key}/":
        raise InvalidRequest(f"invalid storage key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix is a key, possibly ending in ``/``, or empty for everything."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


def expiry_seconds(expires: datetime | None) -> int | None:
    """Expiry as whole epoch seconds, rounded up so an item never expires early."""
    if expires is None:
        return None
    if expires.tzinfo is None:
        raise ValueError("expiry must be timezone-aware")
    return math.ceil(expires.timestamp())


def expiry_datetime(seconds: int | float | None) -> datetime | None:
    """The inverse of ``expiry_seconds``."""
    return None if seconds is None else datetime.fromtimestamp(int(seconds), UTC)


def encode_cursor(key: str) -> str:
    """An opaque cursor that resumes a listing after ``key``."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_cursor(cursor: str, prefix: str) -> str:
    """The key a cursor resumes after; refuse one that does not belong to ``prefix``."""
    try:
        key = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest("invalid page cursor: start the listing again") from exc
    if not key.startswith(prefix):
        raise InvalidRequest("page cursor does not belong to this listing: start again")
    return key


def check_ops(ops: Sequence[Op]) -> None:
    """An atomic write names each key once and stays small."""
    if not ops or len(ops) > MAX_ATOMIC_OPS:
        raise InvalidRequest(f"an atomic write takes 1 to {MAX_ATOMIC_OPS} operations")
    keys = [check_key(op.key) for op in ops]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("an atomic write names a key twice")


class Store(ABC):
    """The state store. Every method names the tenant first; see the module docstring."""

    @abstractmethod
    def get(self, tenant: str, key: str) -> Item:
        """The current item; ``KeyNotFound`` if absent or expired. Strongly consistent."""

    @abstractmethod
    def put(self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None) -> Item:
        """Write unconditionally and return the new item."""

    @abstractmethod
    def create(
        self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None
    ) -> Item:
        """Write only if absent (an expired item counts as absent); else ``KeyExists``."""

    @abstractmethod
    def compare_and_swap(
        self,
        tenant: str,
        key: str,
        value: bytes,
        *,
        revision: str,
        expires: datetime | None = None,
    ) -> Item:
        """Replace only if the item is at ``revision``; else ``RevisionMismatch``.

        ``KeyNotFound`` when the item is absent or expired.
        """

    @abstractmethod
    def delete(self, tenant: str, key: str, *, revision: str | None = None) -> None:
        """Delete; ``KeyNotFound`` if absent, ``RevisionMismatch`` if at another revision."""

    @abstractmethod
    def list(
        self, tenant: str, prefix: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Live items whose key starts with ``prefix``, in key order, a page at a time."""

    @abstractmethod
    def atomic_write(self, tenant: str, ops: Sequence[Op]) -> None:
        """Apply every operation or none; ``AtomicWriteFailed`` names the first that failed."""

    def list_all(self, tenant: str, prefix: str) -> builtins.list[Item]:
        """Every live item under ``prefix``, following cursors to the end."""
        items: builtins.list[Item] = []
        cursor: str | None = None
        while True:
            page = self.list(tenant, prefix, limit=MAX_PAGE, cursor=cursor)
            items.extend(page.items)
            if page.cursor is None:
                return items
            cursor = page.cursor

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing to close
        """Release connections; the default holds none."""

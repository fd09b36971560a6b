"""The embedded state store: one SQLite file in WAL mode.

Each thread gets its own connection (the daemon serves requests from a thread pool); every
write runs in a ``BEGIN IMMEDIATE`` transaction, so SQLite's write lock makes compare-and-swap
exact across threads and processes alike.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from jumpgate.control_plane.clock import Clock, SystemClock
from jumpgate.control_plane.store.base import (
    MAX_PAGE,
    AtomicWriteFailed,
    CompareAndSwap,
    Create,
    Delete,
    Item,
    KeyExists,
    KeyNotFound,
    Op,
    Page,
    Put,
    RevisionMismatch,
    Store,
    check_key,
    check_ops,
    check_prefix,
    decode_cursor,
    encode_cursor,
    expiry_datetime,
    expiry_seconds,
    partition,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    value BLOB NOT NULL,
    revision TEXT NOT NULL,
    expires INTEGER,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;
"""

_LIVE = "(expires IS NULL OR expires > ?)"


def private_database(path: Path) -> None:
    """Make the database file (and any WAL and shared-memory files beside it) 0600 before
    SQLite opens it: it holds every tenant's state or audit trail. SQLite gives the ``-wal``
    and ``-shm`` files it creates later the database file's mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


class ThreadConnections:
    """One connection per thread to a SQLite file in WAL mode; ``close`` closes them all."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_database(path)

    def get(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            # busy_timeout first: switching to WAL takes a lock another process may hold.
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


class SQLiteStore(Store):
    """State in a SQLite file; see the module docstring for its concurrency model."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._connections = ThreadConnections(path)
        self._db = self._connections.get
        self._db().executescript(_SCHEMA)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def _live_row(
        self, db: sqlite3.Connection, pk: str, key: str
    ) -> tuple[bytes, str, int | None] | None:
        row = db.execute(
            f"SELECT value, revision, expires FROM kv WHERE pk = ? AND sk = ? AND {_LIVE}",  # noqa: S608
            (pk, key, self._now()),
        ).fetchone()
        return None if row is None else (bytes(row[0]), row[1], row[2])

    def _upsert(
        self, db: sqlite3.Connection, pk: str, key: str, value: bytes, expires: datetime | None
    ) -> Item:
        revision = uuid.uuid4().hex
        db.execute(
            "INSERT INTO kv (pk, sk, value, revision, expires) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (pk, sk) DO UPDATE SET value = excluded.value, "
            "revision = excluded.revision, expires = excluded.expires",
            (pk, key, value, revision, expiry_seconds(expires)),
        )
        return Item(key, value, revision, expiry_datetime(expiry_seconds(expires)))

    def get(self, tenant: str, key: str) -> Item:
        row = self._live_row(self._db(), partition(tenant), check_key(key))
        if row is None:
            raise KeyNotFound(f"{key} not found")
        return Item(key, row[0], row[1], expiry_datetime(row[2]))

    def put(self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None) -> Item:
        return self._write_one(tenant, Put(key, value, expires))

    def create(
        self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None
    ) -> Item:
        return self._write_one(tenant, Create(key, value, expires))

    def compare_and_swap(
        self,
        tenant: str,
        key: str,
        value: bytes,
        *,
        revision: str,
        expires: datetime | None = None,
    ) -> Item:
        return self._write_one(tenant, CompareAndSwap(key, value, revision, expires))

    def delete(self, tenant: str, key: str, *, revision: str | None = None) -> None:
        self._write_one(tenant, Delete(key, revision))

    def _write_one(self, tenant: str, op: Op) -> Item:
        pk = partition(tenant)
        check_key(op.key)
        with self._write() as db:
            return self._apply(db, pk, op)

    def list(
        self, tenant: str, prefix: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        pk, prefix = partition(tenant), check_prefix(prefix)
        limit = max(1, min(limit, MAX_PAGE))
        after = decode_cursor(cursor, prefix) if cursor else None
        # Prefix match by range: sk >= prefix AND sk < prefix + U+10FFFF avoids LIKE escaping.
        rows = (
            self._db()
            .execute(
                f"SELECT sk, value, revision, expires FROM kv WHERE pk = ? AND sk >= ? AND sk < ? "  # noqa: S608
                f"AND sk > ? AND {_LIVE} ORDER BY sk LIMIT ?",
                (pk, prefix, prefix + "\U0010ffff", after or "", self._now(), limit + 1),
            )
            .fetchall()
        )
        items = [Item(r[0], bytes(r[1]), r[2], expiry_datetime(r[3])) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1].key) if more else None)

    def atomic_write(self, tenant: str, ops: Sequence[Op]) -> None:
        pk = partition(tenant)
        check_ops(ops)
        with self._write() as db:
            for op in ops:
                try:
                    self._apply(db, pk, op)
                except (KeyNotFound, KeyExists, RevisionMismatch) as exc:
                    raise AtomicWriteFailed(f"atomic write failed: {exc.message}") from exc

    def _apply(self, db: sqlite3.Connection, pk: str, op: Op) -> Item:
        """Check ``op``'s condition against the live row and write; the caller commits."""
        key = op.key
        row = self._live_row(db, pk, key)
        match op:
            case Create() if row is not None:
                raise KeyExists(f"{key} exists already")
            case CompareAndSwap() | Delete() if row is None:
                raise KeyNotFound(f"{key} not found")
            case CompareAndSwap(revision=rev) | Delete(revision=rev) if (
                rev is not None and row is not None and row[1] != rev
            ):
                raise RevisionMismatch(f"{key} changed since it was read")
            case Delete():
                db.execute("DELETE FROM kv WHERE pk = ? AND sk = ?", (pk, key))
                return Item(key, b"", "")
        return self._upsert(db, pk, key, op.value, op.expires)

    def dump(self) -> builtins.list[tuple[str, str, bytes]]:
        """Every raw row, expired or not: for operators' backups and the at-rest tests."""
        rows = self._db().execute("SELECT pk, sk, value FROM kv ORDER BY pk, sk").fetchall()
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    def close(self) -> None:
        self._connections.close()

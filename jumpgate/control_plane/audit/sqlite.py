"""The embedded audit store: a SQLite file of its own beside the state store.

One row per event, keyed (tenant, time, id); indexes by type and by user serve filtered
searches without scanning a tenant's whole history. A page is one indexed range query.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from jumpgate.control_plane.audit.base import (
    AuditStore,
    Position,
    Query,
    decode_event,
    encode_event,
    stamp,
)
from jumpgate.control_plane.clock import Clock, SystemClock
from jumpgate.control_plane.store.sqlite import ThreadConnections
from jumpgate.protocol.audit import AuditEvent, AuditPage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL,
    time TEXT NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    user TEXT NOT NULL,
    expires INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant, time, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_type ON events (tenant, type, time, id);
CREATE INDEX IF NOT EXISTS events_by_user ON events (tenant, user, time, id);
"""


class SQLiteAuditStore(AuditStore):
    """Events in a SQLite file (WAL), a connection per thread."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._connections = ThreadConnections(path)
        self._db = self._connections.get
        self._db().executescript(_SCHEMA)

    def append(self, event: AuditEvent, *, expires: datetime) -> bool:
        cursor = self._db().execute(
            "INSERT OR IGNORE INTO events (tenant, time, id, type, user, expires, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.tenant,
                stamp(event.time),
                event.id,
                event.type.value,
                event.user,
                int(expires.timestamp()),
                encode_event(event),
            ),
        )
        return cursor.rowcount == 1

    def append_many(self, rows: list[tuple[AuditEvent, datetime]]) -> None:
        """Append in one transaction (bulk loads: benchmarks, imports)."""
        db = self._db()
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO events (tenant, time, id, type, user, expires, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.tenant,
                    stamp(e.time),
                    e.id,
                    e.type.value,
                    e.user,
                    int(x.timestamp()),
                    encode_event(e),
                )
                for e, x in rows
            ],
        )
        db.execute("COMMIT")

    def search(self, query: Query, cursor: str | None = None) -> AuditPage:
        where = ["tenant = ?", "time >= ?", "time < ?", "expires > ?"]
        args: list[object] = [
            query.tenant,
            stamp(query.since),
            stamp(query.until),
            int(self._clock.now().timestamp()),
        ]
        if query.types:
            types = sorted(query.types)
            where.append(f"type IN ({', '.join('?' * len(types))})")
            args += types
        if query.user:
            where.append("user = ?")
            args.append(query.user)
        if cursor is not None:
            after = Position.decode(cursor)
            where.append("(time, id) < (?, ?)" if query.newest_first else "(time, id) > (?, ?)")
            args += [after.time, after.id]
        order = "DESC" if query.newest_first else "ASC"
        rows = (
            self._db()
            .execute(
                f"SELECT time, id, body FROM events WHERE {' AND '.join(where)} "  # noqa: S608
                f"ORDER BY time {order}, id {order} LIMIT ?",
                [*args, query.limit + 1],
            )
            .fetchall()
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        events = [decode_event(body) for _, _, body in rows]
        next_cursor = Position(rows[-1][0], rows[-1][1]).encode() if more else None
        return AuditPage(events=events, cursor=next_cursor)

    def close(self) -> None:
        self._connections.close()

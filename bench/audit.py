"""Audit search latency over 1,000,000 events in SQLite: the first page, filtered and not.

Events are spread over 30 days across 20 tenants, five users each and every event type;
each search is timed through ``SQLiteAuditStore.search`` (what the API handler calls), cold
connection excluded. Target: first page <= 50 ms.
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.clock import ManualClock
from jumpgate.protocol.audit import AuditEvent, EventType, code

NOW = datetime(2026, 11, 21, tzinfo=UTC)
DAYS = 30
TENANTS = [f"tenant-{n:02d}" for n in range(20)]
USERS = [f"user-{n}" for n in range(5)]


def load(store: SQLiteAuditStore, count: int) -> float:
    rng = random.Random(7)
    types = list(EventType)
    began = time.perf_counter()
    batch: list[tuple[AuditEvent, datetime]] = []
    for n in range(count):
        event_type = rng.choice(types)
        event = AuditEvent(
            type=event_type,
            code=code(event_type),
            time=NOW - timedelta(seconds=rng.uniform(0, DAYS * 86400)),
            id=uuid.uuid4().hex,
            tenant=rng.choice(TENANTS),
            user=rng.choice(USERS),
            server_id=str(uuid.UUID(int=rng.getrandbits(128))),
            command="ls -la /var/log",
            exit_code=0,
        )
        batch.append((event, NOW + timedelta(days=365)))
        if len(batch) == 10_000 or n == count - 1:
            store.append_many(batch)
            batch = []
    return time.perf_counter() - began


def timed(store: SQLiteAuditStore, query: Query, runs: int) -> tuple[float, float, int]:
    samples = []
    size = 0
    for _ in range(runs):
        began = time.perf_counter()
        page = store.search(query)
        samples.append((time.perf_counter() - began) * 1000)
        size = len(page.events)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteAuditStore(Path(directory) / "audit.db", clock=ManualClock(NOW))
        took = load(store, args.events)
        print(f"{args.events:,} events over {DAYS} days, {len(TENANTS)} tenants: {took:.1f}s")
        tenant = TENANTS[3]
        day = timedelta(days=1)
        searches = {
            "last 24h, newest first": Query(tenant, NOW - day, NOW),
            "30 days, newest first": Query(tenant, NOW - DAYS * day, NOW),
            "30 days, oldest first": Query(tenant, NOW - DAYS * day, NOW, newest_first=False),
            "30 days, type exec": Query(tenant, NOW - DAYS * day, NOW, types=frozenset({"exec"})),
            "30 days, one user": Query(tenant, NOW - DAYS * day, NOW, user="user-2"),
            "30 days, type + user": Query(
                tenant, NOW - DAYS * day, NOW, types=frozenset({"user.login"}), user="user-2"
            ),
        }
        worst = 0.0
        print(f"first page (100 events), median and p95 of {args.runs} searches")
        for name, query in searches.items():
            p50, p95, size = timed(store, query, args.runs)
            worst = max(worst, p50)
            print(f"  {name:26} {p50:6.2f} ms  p95 {p95:6.2f} ms  ({size} events)")
        verdict = "meets" if worst <= 50 else "MISSES"
        print(f"  slowest median {worst:.2f} ms ({verdict} target <= 50 ms)")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

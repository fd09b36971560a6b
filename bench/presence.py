"""State writes per node-hour at steady state, counted at the store.

A platform runs in this process with its state store's write calls counted (the store is
real; only counting is added). Simulated agents join and hold tunnels; once their
connections have settled, writes are counted over a window that includes a proxy liveness
beat. Nodes write nothing while nothing changes; each proxy writes one liveness record a
minute for all its tunnels. Target: <= 1 write per node-hour.

With ``--store dynamodb`` the state store is a DynamoDB table on moto's server (as on AWS),
and the writes are priced as DynamoDB on-demand write request units (each of these items is
well under 1 KB, one unit a write) for a month of 1,000 nodes.
"""

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives.asymmetric import ed25519

from bench.aws import REGION, moto_environment
from bench.harness import free_port
from bench.simulated import Joined, hold_many
from jumpgate.cli.daemon.config import Config, StorageConfig
from jumpgate.cli.daemon.platform import Daemon
from jumpgate.protocol import certs

WRITES = ("put", "create", "compare_and_swap", "delete", "atomic_write")
WRITE_UNIT_DOLLARS = 0.625 / 1_000_000
"""DynamoDB on-demand, us-east-1, per write request unit (the price since November 2024)."""
HOURS_A_MONTH = 730


def count_writes(store: Any, counts: Counter[str]) -> None:
    """Wrap the store's write methods so each call is counted."""
    for name in WRITES:
        method: Callable[..., Any] = getattr(store, name)

        def counted(
            *args: Any, _method: Callable[..., Any] = method, _name: str = name, **kw: Any
        ) -> Any:
            counts[_name] += 1
            return _method(*args, **kw)

        setattr(store, name, counted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--window", type=float, default=65.0, help="seconds counted")
    parser.add_argument("--store", choices=("sqlite", "dynamodb"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        storage = StorageConfig()
        if args.store == "dynamodb":
            environ = moto_environment(stack)
            storage = StorageConfig(
                type="dynamodb",
                table_name="jg-state",
                audit_table_name="jg-audit",
                region=REGION,
                endpoint=environ["AWS_ENDPOINT_URL"],
            )
        config = Config(
            storage=storage,
            data_dir=Path(directory),
            web_listen_addr=f"127.0.0.1:{free_port()}",
            ssh_listen_addr=f"127.0.0.1:{free_port()}",
            tunnel_listen_addr=f"127.0.0.1:{free_port()}",
            log_level="warning",
        )
        daemon = Daemon(config)
        counts: Counter[str] = Counter()
        count_writes(daemon.plane.store, counts)
        stop = asyncio.Event()
        loops: list[asyncio.AbstractEventLoop] = []

        def serve() -> None:
            async def run() -> None:
                loops.append(asyncio.get_running_loop())
                await daemon.run(stop)

            asyncio.run(run())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        while not daemon.ready.is_set():
            time.sleep(0.01)
        plane = daemon.plane
        plane.tenants.create("bench", admin="alice", logins=["root"])
        token = plane.tokens.create("bench", system_roles=["node"], ttl=timedelta(hours=1))
        nodes = []
        for n in range(args.nodes):
            key = ed25519.Ed25519PrivateKey.generate()
            joined = plane.tokens.join(
                "bench",
                token=token.token,
                public_key=certs.openssh_public(key.public_key()),
                nodename=f"n{n}",
            )
            nodes.append(
                Joined(joined.host_id, asyncssh.import_private_key(certs.openssh_private(key)))
            )

        async def steady() -> tuple[Counter[str], int, int]:
            held = await hold_many(daemon.tunnel_port, "bench", nodes)
            await asyncio.sleep(5)  # connect-time presence writes land
            start = Counter(counts)
            connect_writes = sum(start.values())
            await asyncio.sleep(args.window)
            window = Counter(counts)
            window.subtract(start)
            online = sum(1 for v in plane.nodes.list("bench") if v.online)
            for conn in held:
                conn.close()
            return window, online, connect_writes

        window, online, connect_writes = asyncio.run(steady())
        loops[0].call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
    total = sum(window.values())
    per_node_hour = total / args.nodes / (args.window / 3600)
    print(
        f"{args.nodes} nodes online ({online} seen online), {args.window:.0f} s of steady state, "
        f"{args.store} state store"
    )
    print(f"  state writes in the window: {total} {dict(+window)}")
    verdict = "meets" if per_node_hour <= 1 else "MISSES"
    print(f"  {per_node_hour:.2f} writes per node-hour ({verdict} target <= 1)")
    print(f"  (before the window: {connect_writes} writes, the joins and one presence per tunnel)")
    monthly = per_node_hour * 1000 * HOURS_A_MONTH
    print(
        f"  a month of 1,000 nodes: {monthly:,.0f} writes, "
        f"${monthly * WRITE_UNIT_DOLLARS:.2f} at on-demand prices"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Proxy memory per idle tunnel: 1,000 tunnels held open against a ``jumpgate start``.

The platform runs as its own process; simulated agents (``bench/simulated.py``) hold the
tunnels from this one. The figure is the growth of the platform's resident memory divided
by the number of tunnels, after a warm-up of 20. (OpenSSH has no counterpart to compare in
the same run: an sshd holds a process per connection, megabytes each.)
Target: <= 25 KiB per tunnel.
"""

import argparse
import asyncio
import resource
import sys
import time

from bench.harness import rss_kib, running
from bench.simulated import hold_many, join_many

TARGET_KIB = 25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tunnels", type=int, default=1000)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the platform inherits it
    warmup = 20
    with running(agent=False, openssh=False) as bench:
        began = time.monotonic()
        nodes = join_many(bench.client, "bench", args.tunnels + warmup)
        joined_in = time.monotonic() - began

        async def measure() -> tuple[int, int, int]:
            held = await hold_many(bench.tunnel_port, "bench", nodes[:warmup])
            await asyncio.sleep(2)
            before = rss_kib(bench.platform_pid)
            held += await hold_many(bench.tunnel_port, "bench", nodes[warmup:])
            await asyncio.sleep(3)
            after = rss_kib(bench.platform_pid)
            live = len([c for c in held if not c.is_closed()])
            for conn in held:
                conn.close()
            return before, after, live

        before, after, live = asyncio.run(measure())
    per_tunnel = (after - before) / args.tunnels
    print(
        f"{args.tunnels} idle tunnels (+{warmup} warm-up), {live} live at the end; "
        f"joins took {joined_in:.1f}s"
    )
    print(f"  platform RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")
    verdict = "meets" if per_tunnel <= TARGET_KIB else "MISSES"
    print(f"  {per_tunnel:.1f} KiB per idle tunnel ({verdict} target <= {TARGET_KIB} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

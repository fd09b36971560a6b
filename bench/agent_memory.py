"""The node agent's memory per busy recorded session (issue 14: at most 8 MB).

``--sessions`` OpenSSH clients reach the node through the proxy at once, each running
``head -c SIZE /dev/urandom`` (incompressible: the recording's parts are as large as they get)
and reading it as fast as it comes. The agent's RSS is sampled every 50 ms; the figure is the
peak above the agent's RSS after one warm-up session, divided by the number of sessions.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.harness import Bench, rss_kib, running

STREAM = "head -c {size} /dev/urandom"
TARGET_MB = 8.0


def _agent_pid(node_dir: Path) -> int:
    """The agent started with ``--data-dir node_dir`` (read from /proc, not signalled)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--services=node" in argv and str(node_dir).encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no agent running with --data-dir {node_dir}")


def _rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes."""
    return rss_kib(pid) * 1024


def _session(bench: Bench, size: int) -> subprocess.Popen[bytes]:
    argv = ["ssh", "-F", str(bench.jumpgate_ssh_config), "web-1", STREAM.format(size=size)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(bench: Bench, sessions: int, size: int) -> tuple[int, int, int, float]:
    """(baseline, peak, after, seconds) of the agent's RSS around ``sessions`` at once."""
    pid = _agent_pid(bench.directory / "node")
    _session(bench, 4 * 1024 * 1024).wait(timeout=120)  # warm-up: imports, first buffers
    time.sleep(2)
    baseline = _rss(pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    running = [_session(bench, size) for _ in range(sessions)]
    codes = [process.wait(timeout=600) for process in running]
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    if any(codes):
        raise RuntimeError(f"sessions failed: exit codes {codes}")
    time.sleep(2)
    return baseline, peak, _rss(pid), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--mib", type=int, default=64, help="MiB of output per session")
    args = parser.parse_args()
    with running(openssh=False) as bench:
        baseline, peak, after, seconds = measure(bench, args.sessions, args.mib * 1024 * 1024)
    mb = 1e6
    per_session = (peak - baseline) / args.sessions / mb
    total = args.sessions * args.mib * 1024 * 1024 / mb
    verdict = "meets" if per_session <= TARGET_MB else "MISSES"
    print(f"agent memory, {args.sessions} recorded sessions of {args.mib} MiB of /dev/urandom")
    rss = (baseline / mb, peak / mb, after / mb)
    print("  agent RSS before {:6.1f} MB, peak {:6.1f} MB, after {:6.1f} MB".format(*rss))
    print(f"  per busy session {per_session:5.1f} MB ({verdict} target <= {TARGET_MB:.0f} MB)")
    print(f"  {total / seconds:6.1f} MB/s through the agent in all ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Client memory with a slow reader: ``jump ssh`` against OpenSSH's ``ssh -J``, same run.

A node streams ``head -c 2G /dev/zero``; a reader takes 1 MB/s of it for 60 s while the
client's resident memory is sampled every second. A client with working flow control stays
flat: it stops reading its channel when stdout backs up and the node waits. Target for
``jump ssh``: flat, at most 64 MB (issue 14; it grew from 135 to 474 MB in 25 s before).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import BIN, jump_home, rss_kib, running

TARGET_MB = 64.0
STREAM = "head -c 2G /dev/zero"


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (``ssh -J`` runs a second ssh for the
    jump host), in MB."""
    try:
        total = rss_kib(pid) / 1024
    except (FileNotFoundError, RuntimeError):  # gone, or a zombie not yet reaped
        return 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return total
    return total + sum(_rss_mb(int(child)) for child in children)


def _slow_read(argv: list[str], env: dict[str, str], seconds: int, rate: int) -> list[float]:
    """Read ``rate`` bytes a second of the client's stdout for ``seconds``; the client's RSS
    (MB) each second."""
    client = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0
    )
    assert client.stdout is not None
    samples: list[float] = []
    try:
        began = time.monotonic()
        for second in range(seconds):
            for _ in range(10):
                if not client.stdout.read(rate // 10):
                    raise RuntimeError(f"{argv[0]}: the stream ended early")
                time.sleep(max(0.0, began + second + (_ + 1) / 10 - time.monotonic()))
            samples.append(_rss_mb(client.pid))
    finally:
        client.kill()
        client.wait(timeout=10)
        client.stdout.close()
    return samples


def _row(name: str, samples: list[float]) -> str:
    settled = samples[min(9, len(samples) - 1)]  # after 10 s: past start-up
    growth = max(samples[9:] or samples) - settled
    return (
        f"  {name:30} start {samples[0]:6.1f} MB  at 10 s {settled:6.1f}  end {samples[-1]:6.1f}"
        f"  max {max(samples):6.1f}  growth after 10 s {growth:+5.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=60, help="how long the reader reads")
    parser.add_argument("--rate", type=int, default=1_000_000, help="bytes read per second")
    args = parser.parse_args()
    with running() as bench:
        env = jump_home(bench)
        jump = _slow_read([str(BIN / "jump"), "ssh", "web-1", STREAM], env, args.seconds, args.rate)
        openssh = _slow_read(
            ["ssh", "-F", str(bench.openssh_ssh_config), "node", STREAM],
            dict(os.environ),
            args.seconds,
            args.rate,
        )
    print(
        f"client RSS, a reader taking {args.rate / 1e6:g} MB/s of '{STREAM}' for "
        f"{args.seconds} s (sampled each second)"
    )
    print(_row("jump ssh (proxy + tunnel)", jump))
    print(_row("openssh ssh -J (sshd -> sshd)", openssh))
    flat = max(jump[9:] or jump) - jump[min(9, len(jump) - 1)] <= 8  # MB, after start-up
    verdict = "meets" if flat and max(jump) <= TARGET_MB else "MISSES"
    print(f"  jump ssh max {max(jump):.1f} MB ({verdict} target: flat, <= {TARGET_MB:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

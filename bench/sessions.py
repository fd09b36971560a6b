"""Session start and throughput through Jumpgate, against an OpenSSH jump host, same run.

Both paths use the same OpenSSH client and user certificate: Jumpgate is proxy + reverse
tunnel + node agent (asyncssh); OpenSSH is ``ssh -J`` through one ``sshd`` to another.
Targets: session start ratio <= 1.0 (median of >= 20), throughput ratio >= 1.0 (1 GiB).
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from bench.harness import Bench, running


def _ssh(
    config: Path, host: str, command: str, stdin: IO[bytes] | None = None, cipher: str | None = None
) -> float:
    argv = ["ssh", "-F", str(config)] + (["-c", cipher] if cipher else []) + [host, command]
    began = time.perf_counter()
    subprocess.run(argv, stdin=stdin, stdout=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - began


def session_start(bench: Bench, runs: int) -> tuple[float, float]:
    jumpgate, openssh = [], []
    for _ in range(runs):  # interleaved, so drift affects both alike
        jumpgate.append(_ssh(bench.jumpgate_ssh_config, "web-1", "true"))
        openssh.append(_ssh(bench.openssh_ssh_config, "node", "true"))
    return statistics.median(jumpgate), statistics.median(openssh)


def throughput(bench: Bench, size: int, cipher: str | None) -> tuple[float, float]:
    rates = []
    paths = ((bench.jumpgate_ssh_config, "web-1"), (bench.openssh_ssh_config, "node"))
    for config, host in paths:
        source = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
        took = _ssh(config, host, "cat > /dev/null", stdin=source.stdout, cipher=cipher)
        source.wait()
        rates.append(size / took / 1e6)
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=25, help="session starts per path")
    parser.add_argument("--mib", type=int, default=1024, help="MiB streamed per throughput run")
    args = parser.parse_args()
    with running() as bench:
        _ssh(bench.jumpgate_ssh_config, "web-1", "true")  # warm both paths once
        _ssh(bench.openssh_ssh_config, "node", "true")
        jumpgate, openssh = session_start(bench, args.runs)
        print(f"session start, median of {args.runs} 'ssh HOST true' (same OpenSSH client)")
        print(f"  jumpgate (proxy + tunnel + agent) {jumpgate * 1000:7.1f} ms")
        print(f"  openssh  (ssh -J sshd -> sshd)     {openssh * 1000:7.1f} ms")
        verdict = "meets" if jumpgate / openssh <= 1.0 else "MISSES"
        print(f"  ratio {jumpgate / openssh:.2f} ({verdict} target <= 1.0)")
        size = args.mib * 1024 * 1024
        for cipher in (None, "aes128-gcm@openssh.com"):
            jg, os_ = throughput(bench, size, cipher)
            name = cipher or "default (chacha20-poly1305)"
            verdict = "meets" if jg / os_ >= 1.0 else "MISSES"
            print(f"throughput, {args.mib} MiB into cat >/dev/null, cipher {name}")
            print(
                f"  jumpgate {jg:7.1f} MB/s   openssh {os_:7.1f} MB/s   "
                f"ratio {jg / os_:.2f} ({verdict} target >= 1.0)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

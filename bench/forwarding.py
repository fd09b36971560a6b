"""Throughput of ``ssh -L`` through Jumpgate, against the same through OpenSSH, same run.

Both paths use the same OpenSSH client and user certificate and the same sink: a TCP server
on 127.0.0.1 that counts and discards what it reads. Jumpgate is proxy + reverse tunnel +
node agent (the node forwards the ``direct-tcpip`` channel); OpenSSH is ``ssh -J`` through
one ``sshd`` to another (the second forwards it). ``--mib`` MiB are written into the local
end of the forward, timed until the sink has read the last byte.

Usage: python -m bench.forwarding [--mib 1024] [--runs 3]
Target: ratio >= 1.0 (Jumpgate at least as fast as OpenSSH); median of ``--runs``.
"""

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.harness import free_port, running, wait_port

CHUNK = 256 * 1024
SECONDS = 300


class Sink:
    """A TCP server on 127.0.0.1 that reads and counts; ``wait`` for a byte count."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.received = 0
        self._more = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(CHUNK):
                with self._more:
                    self.received += len(data)
                    self._more.notify_all()

    def wait(self, total: int) -> None:
        deadline = time.monotonic() + SECONDS
        with self._more:
            while self.received < total:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the sink had {self.received} of {total} bytes")
                self._more.wait(left)

    def close(self) -> None:
        self._server.close()


def forwarded(config: Path, host: str, sink: Sink, size: int) -> float:
    """MB/s of ``size`` bytes through ``ssh -N -L`` to ``sink`` via ``host``."""
    local = free_port()
    argv = ["ssh", "-F", str(config), "-N", "-o", "ExitOnForwardFailure=yes"]
    argv += ["-L", f"{local}:127.0.0.1:{sink.port}", host]
    ssh = subprocess.Popen(argv)
    try:
        wait_port(local, 30)  # a probe: one forwarded connection, closed at once
        block = bytes(CHUNK)
        before = sink.received
        began = time.perf_counter()
        with socket.create_connection(("127.0.0.1", local)) as conn:
            sent = 0
            while sent < size:
                conn.sendall(block[: min(CHUNK, size - sent)])
                sent += min(CHUNK, size - sent)
            sink.wait(before + size)
        took = time.perf_counter() - began
    finally:
        ssh.terminate()
        ssh.wait(timeout=30)
    return size / took / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="MiB sent through -L per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per path (median)")
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    sink = Sink()
    try:
        with running() as bench:
            paths = ((bench.jumpgate_ssh_config, "web-1"), (bench.openssh_ssh_config, "node"))
            rates: list[list[float]] = [[], []]
            for _ in range(args.runs):  # interleaved, so drift affects both alike
                for i, (config, host) in enumerate(paths):
                    rates[i].append(forwarded(config, host, sink, size))
    finally:
        sink.close()
    jumpgate, openssh = (statistics.median(r) for r in rates)
    print(f"ssh -L throughput, {args.mib} MiB into a TCP sink, median of {args.runs}")
    print(f"  jumpgate (proxy + tunnel + agent) {jumpgate:7.1f} MB/s")
    print(f"  openssh  (ssh -J sshd -> sshd)     {openssh:7.1f} MB/s")
    verdict = "meets" if jumpgate / openssh >= 1.0 else "MISSES"
    print(f"  ratio {jumpgate / openssh:.2f} ({verdict} target >= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

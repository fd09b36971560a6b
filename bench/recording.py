"""Recording overhead on session throughput: 1 GiB of output with recording on vs off.

The same OpenSSH client reaches the node through the proxy (the route ``jump ssh`` takes) and
runs ``head -c 1G /dev/zero``; the tenant's recording mode is switched between runs with
``PUT /v1/settings/recording`` (the agent follows within its settings interval). Runs are
interleaved. Target: on/off >= 0.9. Zeros compress to almost nothing, so the same is measured
with text (``ls -l``-like lines, which compress about 6:1) as well.
"""

import argparse
import statistics
import subprocess
import sys
import time

from bench.harness import Bench, running
from jumpgate.node_agent.uploads import SETTINGS_SECONDS
from jumpgate.protocol import calls, models
from jumpgate.protocol.recording import RecordingMode


def _mode(bench: Bench, mode: str) -> None:
    settings = models.RecordingSettings(mode=RecordingMode(mode), record_exec=True)
    bench.client.send(calls.set_recording_settings(settings))
    time.sleep(SETTINGS_SECONDS + 1)


ZEROS = "head -c {size} /dev/zero"
TEXT = "yes 'drwxr-xr-x  2 root root  4096 Nov 21 10:00 somefile.txt' | head -c {size}"


def _rate(bench: Bench, command: str, size: int) -> float:
    argv = ["ssh", "-F", str(bench.jumpgate_ssh_config), "web-1", command.format(size=size)]
    began = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, timeout=600)
    return size / (time.perf_counter() - began) / 1e6


def _uploaded(bench: Bench, count: int, seconds: float = 120) -> int:
    """Recordings listed, waiting up to ``seconds`` for ``count`` of them."""
    deadline = time.monotonic() + seconds
    while True:
        rows = bench.client.send(calls.recordings([])).recordings
        if len(rows) >= count or time.monotonic() > deadline:
            return len(rows)
        time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="MiB of output per run")
    parser.add_argument("--text-mib", type=int, default=256, help="MiB of text per run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    args = parser.parse_args()
    with running() as bench:
        recorded = 0
        for label, command, mib in (
            ("head -c {}M /dev/zero", ZEROS, args.mib),
            ("{}M of text (yes | head)", TEXT, args.text_mib),
        ):
            off, on = [], []
            for _ in range(args.rounds):
                _mode(bench, "off")
                off.append(_rate(bench, command, mib * 1024 * 1024))
                _mode(bench, "node")
                on.append(_rate(bench, command, mib * 1024 * 1024))
            recorded += args.rounds
            ratio = statistics.median(on) / statistics.median(off)
            verdict = "meets" if ratio >= 0.9 else "MISSES"
            print(f"recording overhead, {label.format(mib)} through the proxy")
            print(f"  recording off {statistics.median(off):7.1f} MB/s  (runs {_fmt(off)})")
            print(f"  recording on  {statistics.median(on):7.1f} MB/s  (runs {_fmt(on)})")
            print(f"  ratio {ratio:.2f} ({verdict} target >= 0.9)")
        print(f"{_uploaded(bench, recorded)} of {recorded} recordings uploaded")
    return 0


def _fmt(rates: list[float]) -> str:
    return ", ".join(f"{r:.1f}" for r in rates)


if __name__ == "__main__":
    sys.exit(main())

"""Cold start of each control-plane function module, in a fresh interpreter each time.

Two figures per function, medians of ``--runs``:

- import: the module's imports alone (``runtime`` and what it pulls in), the part of a cold
  start that depends on the code; target <= 300 ms;
- cold start: importing the module as Lambda does, which also reads the environment, fetches
  the master key from Secrets Manager and makes the stores' clients, here against moto's
  server on loopback (about 2.4 ms a call; AWS's own latency is not measured).
"""

import argparse
import statistics
import subprocess
import sys
from contextlib import ExitStack

from bench.aws import moto_environment
from jumpgate.protocol.functions import Function

PROBE = (
    "import time; began = time.perf_counter(); import {module}; "
    "print((time.perf_counter() - began) * 1000)"
)


def _millis(module: str, environ: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        environ = moto_environment(stack)
        imports = [
            _millis("jumpgate.control_plane.lambdas.runtime", environ) for _ in range(args.runs)
        ]
        print(f"control-plane functions, median of {args.runs} fresh interpreters")
        median = statistics.median(imports)
        verdict = "meets" if median <= 300 else "MISSES"
        print(f"  imports (every function): {median:6.0f} ms ({verdict} target <= 300)")
        for function in Function:
            module = f"jumpgate.control_plane.lambdas.{function.value}"
            starts = [_millis(module, environ) for _ in range(args.runs)]
            print(f"  {function.value:9} cold start: {statistics.median(starts):6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

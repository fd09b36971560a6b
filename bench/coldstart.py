"""Cold start of each control-plane function module, from the bundle as it ships.

The bundle is made by ``infra/cdk/bundle.py --host``: the same wheel and server
dependencies as the Lambda bundle, compiled to bytecode the same way, for this machine's
interpreter. Each figure is a fresh interpreter that sees only the bundle and the standard
library (``-I -S``) and writes no bytecode (``-B``; Lambda's code directory is read-only).
Medians of ``--runs``:

- import: the modules alone (``lambdas.runtime`` and what it pulls in), the part of a cold
  start that depends on the code; target <= 300 ms;
- cold start: importing the function's module as Lambda does, which also reads the
  environment, fetches the master key from Secrets Manager and makes the stores' clients,
  here against moto's server on loopback (about 2.4 ms a call; AWS's own latency is not
  measured).

``--sources`` measures the bundle without its bytecode as well: what each cold start would
cost if the bundle shipped sources alone.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.aws import moto_environment
from jumpgate.protocol.functions import Function

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys; sys.path.insert(0, {bundle!r}); import time; began = time.perf_counter(); "
    "import {module}; print((time.perf_counter() - began) * 1000)"
)


def _millis(bundle: Path, module: str, environ: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", PROBE.format(bundle=str(bundle), module=module)],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _median(runs: int, bundle: Path, module: str, environ: dict[str, str]) -> float:
    return statistics.median(_millis(bundle, module, environ) for _ in range(runs))


def _host_bundle(out: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "cdk" / "bundle.py"), "--host", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SystemExit(f"bench.coldstart: the host bundle was not made: {said}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sources", action="store_true", help="also without the bytecode")
    args = parser.parse_args()
    runtime = "jumpgate.control_plane.lambdas.runtime"
    with ExitStack() as stack:
        bundle = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "bundle"
        _host_bundle(bundle)
        environ = moto_environment(stack)
        print(f"control-plane functions, from the bundle, median of {args.runs} interpreters")
        median = _median(args.runs, bundle, runtime, environ)
        verdict = "meets" if median <= 300 else "MISSES"
        print(f"  imports (every function): {median:6.0f} ms ({verdict} target <= 300)")
        for function in Function:
            module = f"jumpgate.control_plane.lambdas.{function.value}"
            start = _median(args.runs, bundle, module, environ)
            print(f"  {function.value:9} cold start: {start:6.0f} ms")
        if args.sources:
            for cache in bundle.rglob("__pycache__"):
                shutil.rmtree(cache)
            median = _median(args.runs, bundle, runtime, environ)
            print(f"  imports from sources alone (no bytecode shipped): {median:6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

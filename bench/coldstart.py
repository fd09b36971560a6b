"""Cold start of each control-plane function module, in a fresh interpreter each time.

Two figures per function, medians of ``--runs``:

- import: the module's imports alone (``runtime`` and what it pulls in), the part of a cold
  start that depends on the code; target <= 300 ms;
- cold start: importing the module as Lambda does, which also reads the environment, fetches
  the master key from Secrets Manager and makes the stores' clients, here against moto's
  server on loopback (about 2.4 ms a call; AWS's own latency is not measured).
"""

import argparse
import base64
import logging
import os
import secrets
import statistics
import subprocess
import sys
from contextlib import ExitStack

import boto3
from moto.server import ThreadedMotoServer

from bench.harness import free_port
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.store.dynamodb import ensure_table
from jumpgate.protocol.functions import Function

REGION = "us-east-1"
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


def _aws(stack: ExitStack) -> dict[str, str]:
    """moto's server with the tables, bucket and secret the functions expect; their env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stack.callback(server.stop)
    endpoint = f"http://127.0.0.1:{port}"
    environ = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "JUMPGATE_PUBLIC_ADDR": "example.sh",
        "JUMPGATE_STATE_TABLE": "jg-state",
        "JUMPGATE_AUDIT_TABLE": "jg-audit",
        "JUMPGATE_RECORDINGS_URI": "s3://jg-recordings/sessions",
        "JUMPGATE_MASTER_KEY_SECRET": "jumpgate/master-key",
        "POWERTOOLS_METRICS_NAMESPACE": "Jumpgate",
    }
    os.environ.update({k: environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
    ensure_table("jg-state", REGION, endpoint)
    ensure_audit_table("jg-audit", REGION, endpoint)
    boto3.client("s3", region_name=REGION, endpoint_url=endpoint).create_bucket(
        Bucket="jg-recordings"
    )
    boto3.client("secretsmanager", region_name=REGION, endpoint_url=endpoint).create_secret(
        Name="jumpgate/master-key", SecretString=base64.b64encode(secrets.token_bytes(32)).decode()
    )
    return environ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with ExitStack() as stack:
        environ = _aws(stack)
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

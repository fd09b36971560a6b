"""Cold start of each control-plane function module, from the bundle as it ships.

The bundle is made by ``infra/cdk/bundle.py --host``: the same wheel and server
dependencies as the Lambda bundle, compiled to bytecode the same way, for this machine's
interpreter. Each figure is a fresh interpreter (``bench/coldstart_probe.py``) that sees only
the bundle and the standard library (``-I -S``) and writes no bytecode (``-B``; Lambda's code
directory is read-only). Medians of ``--runs`` rounds, each measuring everything once (this
machine's speed drifts by 15% within minutes; rounds put every figure under the same drift):

- import: the modules alone (``lambdas.runtime`` and what it pulls in), the part of a cold
  start that depends on the code; target <= 300 ms. Beside it, in the same rounds, the
  dependencies alone: every module of the bundle those imports load except jumpgate's own
  (boto3 and botocore, Powertools, pydantic, pynamodb, cryptography...), so the difference
  is what jumpgate's code costs and the machine's speed at the time shows;
- cold start: importing the function's module as Lambda does, which also reads the
  environment, fetches the master key from Secrets Manager and makes the clients, here
  against moto's server on loopback (about 2.4 ms a call; AWS's own latency is not measured);
- first request: the container's first answer, a request of the function's own routes (an
  admin's signed read; for the internal function, the proxy's tenant lookup), so work put off
  from the cold start to the first request is counted; and the sum of the two.

``--sources`` measures the bundle without its bytecode as well: what each cold start would
cost if the bundle shipped sources alone.
"""

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyotp
from cryptography.hazmat.primitives.asymmetric import ed25519

from bench.aws import moto_environment
from bench.harness import PASSWORD
from jumpgate.control_plane.lambdas.runtime import FunctionSettings, open_plane
from jumpgate.edge_proxy.events import http_event
from jumpgate.protocol import certs, signing
from jumpgate.protocol.functions import Function

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("coldstart_probe.py")
TENANT = "bench"
FIRST: dict[Function, tuple[str, str]] = {
    Function.AUTH: ("GET", "/v1/status"),
    Function.TOKENS: ("GET", "/v1/tokens"),
    Function.RESOURCES: ("GET", "/v1/users"),
    Function.AUDIT: ("GET", "/v1/audit/events"),
    Function.INTERNAL: ("POST", "/internal/v1/tenant-by-user-ca"),
}
"""The first request each function answers."""


def _run(what: str, argv: list[str], environ: dict[str, str] | None = None, stdin: str = "") -> str:
    """The output of ``argv``; ``SystemExit`` with its own last line when it fails."""
    done = subprocess.run(
        argv, input=stdin, env=environ, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SystemExit(f"bench.coldstart: {what}: {said}")
    return done.stdout


def _probe(
    bundle: Path, module: str, environ: dict[str, str], event: dict[str, Any] | None = None
) -> tuple[float, float]:
    """Milliseconds to import ``module`` and to answer ``event``, in a fresh interpreter."""
    command = [sys.executable, "-I", "-S", "-B", str(PROBE), str(bundle), module]
    if event is None:
        out = _run(f"{module} did not start", command, environ)
    else:
        out = _run(f"{module} did not start", [*command, "--request"], environ, json.dumps(event))
    imported, answered, status = (out.strip().splitlines() or [""])[-1].split()
    if event is not None and status != "200":
        raise SystemExit(f"bench.coldstart: {module} answered {event['rawPath']} {status}")
    return float(imported), float(answered)


def _dependencies(bundle: Path, module: str, environ: dict[str, str]) -> str:
    command = [sys.executable, "-I", "-S", "-B", str(PROBE), str(bundle), module, "--list"]
    return _run(f"{module} did not import", command, environ).strip().splitlines()[-1]


class FirstRequests:
    """Each function's first request, made afresh each round (a signature is good for five
    minutes): a tenant and its admin made through the stores the functions use, the admin's
    certificate signing the reads."""

    def __init__(self) -> None:
        plane = open_plane(FunctionSettings.from_environ(os.environ))
        created = plane.tenants.create(TENANT, admin="admin", logins=["root"])
        enrolment = plane.users.signup(TENANT, created.admin_invite.token, PASSWORD)
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.certificate = plane.login.login(
            TENANT,
            user="admin",
            password=PASSWORD,
            otp=pyotp.TOTP(enrolment.totp_secret).now(),
            public_key=certs.openssh_public(self.key.public_key()),
        ).certificate
        self.host = f"{TENANT}.{os.environ['JUMPGATE_PUBLIC_ADDR']}"
        self.user_ca, _ = plane.authorities.public_keys(TENANT)

    def event(self, function: Function) -> dict[str, Any]:
        method, path = FIRST[function]
        headers = {"host": self.host}
        body = b""
        if function is Function.INTERNAL:
            body = json.dumps({"public_key": self.user_ca}).encode()
            headers["content-type"] = "application/json"
        else:
            request = signing.SignedRequest(
                method, self.host, path, "", int(time.time()), secrets.token_urlsafe(18), body
            )
            headers.update(signing.headers(self.key, self.certificate, request))
        return http_event(
            method=method, path=path, query="", headers=headers, body=body, source_ip="10.0.0.1"
        )


def _host_bundle(out: Path) -> None:
    bundler = ROOT / "infra" / "cdk" / "bundle.py"
    _run("the host bundle was not made", [sys.executable, str(bundler), "--host", str(out)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--sources", action="store_true", help="also without the bytecode")
    args = parser.parse_args()
    runtime = "jumpgate.control_plane.lambdas.runtime"
    with ExitStack() as stack:
        bundle = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "bundle"
        _host_bundle(bundle)
        environ = moto_environment(stack)
        os.environ.update(environ)
        requests = FirstRequests()
        probes: dict[str, tuple[str, Function | None]] = {
            "imports": (runtime, None),
            "dependencies": (_dependencies(bundle, runtime, environ), None),
        }
        for function in FIRST:
            probes[function.value] = (f"jumpgate.control_plane.lambdas.{function.value}", function)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in probes}
        for _ in range(args.runs):
            for name, (module, answering) in probes.items():
                event = requests.event(answering) if answering else None
                samples[name].append(_probe(bundle, module, environ, event))

        def median(name: str, part: int = 0) -> float:
            return statistics.median(sample[part] for sample in samples[name])

        imports, alone = median("imports"), median("dependencies")
        verdict = "meets" if imports <= 300 else "MISSES"
        print(f"control-plane functions, from the bundle, median of {args.runs} rounds")
        print(f"  imports (every function): {imports:6.0f} ms ({verdict} target <= 300)")
        own = imports - alone
        print(f"  the dependencies alone:    {alone:6.0f} ms (jumpgate's own code: {own:.0f} ms)")
        print(f"  {'function':9} {'cold start':>10} {'1st request':>12} {'total':>7}  request")
        for function, (method, path) in FIRST.items():
            start, first = median(function.value), median(function.value, 1)
            print(
                f"  {function.value:9} {start:7.0f} ms {first:9.0f} ms {start + first:4.0f} ms"
                f"  {method} {path}"
            )
        if args.sources:
            for cache in bundle.rglob("__pycache__"):
                shutil.rmtree(cache)
            sources = statistics.median(
                _probe(bundle, runtime, environ)[0] for _ in range(args.runs)
            )
            print(f"  imports from sources alone (no bytecode shipped): {sources:6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

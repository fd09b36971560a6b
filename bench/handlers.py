"""Warm latency of the control-plane functions against moto's server (DynamoDB, S3, Secrets
Manager on loopback), each handler called as Lambda calls a warm container: the API Gateway
v2 event the proxy sends, through the Powertools stack, the resolver and the stores.

- login (``POST /v1/login``): password (bcrypt, cost 10), TOTP, user certificate, audit event;
  floor: one ``bcrypt.checkpw``, measured in the same run;
- join (``POST /v1/join``): join token, node record, host certificate, audit event;
- floor for both: one DynamoDB ``GetItem`` round trip to the same moto server.

moto answers in about a millisecond or two where DynamoDB answers in a few; the ratios to
the store floor say how many round trips each call costs.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import boto3
import pyotp
from cryptography.hazmat.primitives.asymmetric import ed25519

from bench.aws import REGION, moto_environment
from bench.coldstart_probe import Context
from bench.harness import PASSWORD, bcrypt_checks, p50_p95
from jumpgate.control_plane.lambdas.runtime import FunctionSettings, entry_point, open_plane
from jumpgate.edge_proxy.events import http_event
from jumpgate.protocol import certs
from jumpgate.protocol.functions import Function
from jumpgate.protocol.models import Role


def _post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    return http_event(
        method="POST",
        path=path,
        query="",
        headers={"host": "bench.example.sh", "content-type": "application/json"},
        body=json.dumps(body).encode(),
        source_ip="203.0.113.7",
    )


def _timed(handler: Any, event: dict[str, Any]) -> float:
    """Milliseconds of one call; its EMF and log lines (stdout, as in Lambda) are written, to
    nowhere, inside the measurement."""
    with contextlib.redirect_stdout(io.StringIO()):
        began = time.perf_counter()
        answer = handler(event, Context())
        took = (time.perf_counter() - began) * 1000
    assert answer["statusCode"] == 200, answer
    return took


def _public_key() -> str:
    return certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())


def _row(name: str, samples: list[float], floor: float) -> str:
    p50, p95 = p50_p95(samples)
    return f"  {name:<30}{p50:>8.1f}{p95:>8.1f}{p50 / floor:>10.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args()
    with ExitStack() as stack:
        os.environ.update(moto_environment(stack))
        handler = entry_point(Function.AUTH)
        plane = open_plane(FunctionSettings.from_environ(os.environ))
        plane.tenants.create("bench", admin="admin", logins=["root"])
        totp = {}
        for n in range(args.samples + 1):
            invite = plane.users.add("bench", f"user{n}", logins=["root"], roles=[Role.ACCESS])
            totp[f"user{n}"] = plane.users.signup("bench", invite.token, PASSWORD).totp_secret
        token = plane.tokens.create("bench", system_roles=["node"], ttl=timedelta(hours=1)).token

        def login(user: str) -> float:
            event = _post(
                "/v1/login",
                {
                    "user": user,
                    "password": PASSWORD,
                    "otp": pyotp.TOTP(totp[user]).now(),
                    "public_key": _public_key(),
                },
            )
            return _timed(handler, event)

        def join(n: int) -> float:
            event = _post(
                "/v1/join", {"token": token, "public_key": _public_key(), "nodename": f"n{n}"}
            )
            return _timed(handler, event)

        login("user0")  # warm: the first request of a container
        join(0)
        logins = [login(f"user{n}") for n in range(1, args.samples + 1)]
        joins = [join(n) for n in range(1, args.samples + 1)]

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        key = {"pk": {"S": "/tenants/bench"}, "sk": {"S": "ca/user"}}
        reads = []
        for _ in range(args.samples):
            began = time.perf_counter()
            dynamodb.get_item(TableName="jg-state", Key=key, ConsistentRead=True)
            reads.append((time.perf_counter() - began) * 1000)
        checks = bcrypt_checks(args.samples)
    read, check = statistics.median(reads), statistics.median(checks)
    print(f"warm auth function against moto, {args.samples} calls each")
    print(f"  {'':<30}{'p50 ms':>8}{'p95 ms':>8}{'÷ GetItem':>10}")
    print(_row("login (bcrypt + certificate)", logins, read))
    print(_row("join (host certificate)", joins, read))
    print(_row("DynamoDB GetItem (floor)", reads, read))
    print(_row("bcrypt check (floor)", checks, read))
    print(
        f"  login beyond bcrypt: {statistics.median(logins) - check:.1f} ms; "
        f"join: {statistics.median(joins):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The control plane as Lambda functions, against moto (DynamoDB, S3, Secrets Manager): each
function module imported as Lambda would (cold start from the environment), invoked with the
API Gateway v2 events the proxy sends, routed by ``protocol.functions``."""

import asyncio
import base64
import importlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from botocore.session import Session
from cryptography.hazmat.primitives.asymmetric import ed25519
from moto import mock_aws

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.lambdas.runtime import (
    FunctionSettings,
    SettingsError,
    master_key,
    open_plane,
)
from jumpgate.control_plane.recordings.s3 import ensure_bucket
from jumpgate.control_plane.store.dynamodb import ensure_table
from jumpgate.edge_proxy import tls
from jumpgate.edge_proxy.control import ControlPlaneClient
from jumpgate.edge_proxy.events import http_event
from jumpgate.edge_proxy.lambda_invoke import ControlPlaneUnavailable, LambdaInvoke
from jumpgate.edge_proxy.web import WebFront
from jumpgate.protocol import calls as api_calls
from jumpgate.protocol import certs, models, routes
from jumpgate.protocol.audit import EventType, code
from jumpgate.protocol.calls import Call
from jumpgate.protocol.client import APIError, AsyncClient
from jumpgate.protocol.functions import Function
from tests.functional.conftest import Platform
from tests.functional.lambda_endpoint import Context, LambdaEndpoint

ROOT = Path(__file__).resolve().parents[2]
ENV_SECRET = "JUMPGATE_MASTER_KEY_SECRET"
REGION = "us-east-1"
ENVIRONMENT = {
    "AWS_REGION": REGION,
    "JUMPGATE_PUBLIC_ADDR": "localhost",
    "JUMPGATE_STATE_TABLE": "jg-state",
    "JUMPGATE_AUDIT_TABLE": "jg-audit",
    "JUMPGATE_RECORDINGS_URI": "s3://jg-recordings/sessions",
    "JUMPGATE_MASTER_KEY_SECRET": "jumpgate/master-key",
    "POWERTOOLS_METRICS_NAMESPACE": "Jumpgate",
}


class SystemTime:
    """The functions run on the real clock; requests are signed and codes made on it too."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, _: object) -> None:
        """A fresh TOTP step comes with time: nothing to move."""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        ensure_table("jg-state", REGION)
        ensure_audit_table("jg-audit", REGION)
        ensure_bucket(f"s3://jg-recordings/sessions?region={REGION}")
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="jumpgate/master-key", SecretString=key
        )
        yield


def _cold_start(function: Function) -> object:
    """Import the function's module afresh, as a new Lambda container does."""
    name = f"jumpgate.control_plane.lambdas.{function.value}"
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.fixture
def invoke(aws: None) -> Iterator[LambdaInvoke]:
    """The proxy's transport to the functions: boto3's Invoke over HTTP to a local Lambda
    endpoint running the modules, each cold-started as Lambda would."""
    handlers = {
        f"jumpgate-{function.value}": _cold_start(function).handler  # type: ignore[attr-defined]
        for function in Function
    }
    with LambdaEndpoint(handlers) as endpoint:
        names = {function: f"jumpgate-{function.value}" for function in Function}
        transport = LambdaInvoke(names, region=REGION, endpoint=endpoint.url)
        yield transport
        transport.close()


@pytest.fixture
def functions(invoke: LambdaInvoke) -> Platform:
    """A platform whose every call goes through ``invoke`` to the function owning the route."""
    plane = open_plane(FunctionSettings.from_environ(os.environ))
    platform = Platform(plane, SystemTime())  # type: ignore[arg-type]
    platform.handler = lambda event, _: asyncio.run(invoke(event))
    return platform


def test_signup_login_and_admin_calls_through_the_functions(functions: Platform) -> None:
    alice = functions.admin_session("acme", "alice")
    users = functions.call("GET", "/v1/users", session=alice)
    assert users.status == 200, users.body
    assert [u["name"] for u in users.body["users"]] == ["alice"]
    token = functions.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=alice)
    assert token.status == 201, token.body
    events = functions.call("GET", "/v1/audit/events", session=alice, query="type=user.login")
    assert events.status == 200, events.body
    assert [e["type"] for e in events.body["events"]] == ["user.login"]


def test_the_proxys_own_calls_reach_the_internal_function(
    functions: Platform, invoke: LambdaInvoke
) -> None:
    functions.admin_session("acme", "alice")
    user_ca = functions.plane.authorities.public_keys("acme")[0]
    client = ControlPlaneClient(invoke)
    assert asyncio.run(client.tenant_by_user_ca(user_ca)) == "acme"


def test_the_https_front_on_lambda_keeps_internal_routes_off(
    functions: Platform, invoke: LambdaInvoke, tmp_path: Path
) -> None:
    """On AWS the path picks the function, so the front must not forward the proxy's own
    routes: from outside they would reach the internal function unauthenticated."""
    functions.admin_session("acme", "alice")
    user_ca = functions.plane.authorities.public_keys("acme")[0]
    front = WebFront(invoke)
    cert, key = tls.ensure_certificate(tmp_path, "localhost")

    async def calls() -> tuple[int, int]:
        port = await front.start("127.0.0.1", 0, tls.server_context(cert, key))
        client = AsyncClient(f"acme.localhost:{port}", insecure=True)
        internal = Call(
            routes.TENANT_BY_USER_CA,
            lambda answer: models.TenantName.model_validate(answer),
            "TenantName",
            body=models.TenantByUserCA(public_key=user_ca),
        )
        try:
            pinged = await client.send(api_calls.ping())
            assert pinged.cluster_name == "acme"
            await client.send(internal)
        except APIError as exc:
            return 200, exc.status
        finally:
            await client.aclose()
            await front.stop()
        return 200, 200

    assert asyncio.run(calls()) == (200, 404)


def test_the_internal_function_refuses_an_unstorable_event_for_good(
    functions: Platform, invoke: LambdaInvoke
) -> None:
    """On AWS as in-process: an event no store takes is a 400 (the proxy replaces it by
    ``audit.dropped`` and goes on), not a failed invoke (503, sent again forever); an event
    of a tenant that does not exist is not stored (issue 14 round 2, findings 1 and 11)."""
    functions.invite("acme", "alice")
    when = datetime.now(UTC).isoformat()
    poison = {"type": "auth", "tenant": "acme", "time": when, "fields": {"user": "\ud800"}}
    ghost = {"type": "auth", "tenant": "ghost", "time": when, "outcome": "W"}

    def post(events: list[dict[str, Any]]) -> dict[str, Any]:
        event = http_event(
            method="POST",
            path="/internal/v1/audit",
            query="",
            headers={"host": "internal", "content-type": "application/json"},
            body=json.dumps({"events": events}).encode(),
            source_ip="127.0.0.1",
        )
        return asyncio.run(invoke(event))

    refused = post([poison])
    assert refused["statusCode"] == 400, refused
    assert "surrogates not allowed" in json.loads(refused["body"])["detail"]
    assert post([ghost])["statusCode"] == 204
    now = datetime.now(UTC)
    for tenant in ("acme", "ghost"):
        query = Query(
            tenant, now - timedelta(hours=1), now + timedelta(hours=1), frozenset({"auth"})
        )
        assert functions.plane.audit.search(query).events == []


def test_a_failing_function_is_reported_not_answered(aws: None) -> None:
    def crash(event: dict[str, object], context: object) -> dict[str, object]:
        raise RuntimeError("boom")

    with LambdaEndpoint({"jumpgate-auth": crash}) as endpoint:
        names = {function: "jumpgate-auth" for function in Function}
        invoke = LambdaInvoke(names, region=REGION, endpoint=endpoint.url)
        event = {"rawPath": "/v1/status", "headers": {}}
        with pytest.raises(ControlPlaneUnavailable, match="jumpgate-auth failed"):
            asyncio.run(invoke(event))
        invoke.close()


def test_a_function_refuses_routes_of_another(aws: None) -> None:
    handler = _cold_start(Function.AUTH).handler  # type: ignore[attr-defined]
    event = {
        "version": "2.0",
        "rawPath": "/v1/users",
        "rawQueryString": "",
        "headers": {"host": "acme.localhost"},
        "requestContext": {"http": {"method": "GET", "path": "/v1/users", "sourceIp": "1.2.3.4"}},
        "isBase64Encoded": False,
    }
    answer = handler(event, Context("jumpgate-auth"))
    assert answer["statusCode"] == 404
    assert "not served by the auth function" in answer["body"]


def test_a_cold_start_makes_every_client_once_on_one_botocore_session(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = open_plane(FunctionSettings.from_environ(os.environ))
    plane.tenants.create("acme", admin="alice", logins=["root"])
    sessions: list[object] = []
    clients: list[str] = []
    made_session, made_client = Session.__init__, Session.create_client

    def new_session(self: Session, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        made_session(self, *args, **kwargs)

    def new_client(self: Session, name: str, *args: Any, **kwargs: Any) -> Any:
        clients.append(name)
        assert self is sessions[0]
        return made_client(self, name, *args, **kwargs)

    monkeypatch.setattr(Session, "__init__", new_session)
    monkeypatch.setattr(Session, "create_client", new_client)
    handler = _cold_start(Function.AUTH).handler  # type: ignore[attr-defined]
    assert len(sessions) == 1
    assert sorted(clients) == ["dynamodb", "s3", "secretsmanager"]

    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    body = {"user": "alice", "password": "x" * 12, "otp": "000000", "public_key": key}
    event = http_event(
        method="POST",
        path="/v1/login",
        query="",
        headers={"host": "acme.localhost", "content-type": "application/json"},
        body=json.dumps(body).encode(),
        source_ip="203.0.113.7",
    )
    answer = handler(event, Context("jumpgate-auth"))
    assert answer["statusCode"] == 401, answer
    assert (len(sessions), len(clients)) == (1, 3)  # the first request made none
    now = datetime.now(UTC)
    page = plane.audit.search(Query(tenant="acme", since=now - timedelta(minutes=5), until=now))
    assert [(e.type, e.code) for e in page.events] == [
        (EventType.USER_LOGIN, code(EventType.USER_LOGIN, "W"))
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"JUMPGATE_STATE_TABLE": None}, "set JUMPGATE_STATE_TABLE in the function's environment"),
        ({"JUMPGATE_RECORDINGS_URI": "/var/recordings"}, "JUMPGATE_RECORDINGS_URI: must be s3://"),
        (
            {"JUMPGATE_SSH_PUBLIC_PORT": "0"},
            "JUMPGATE_SSH_PUBLIC_PORT: 0 must be a whole number from 1 to 65535",
        ),
        ({"JUMPGATE_TUNNEL_PUBLIC_PORT": "x"}, "JUMPGATE_TUNNEL_PUBLIC_PORT: 'x' must be a whole"),
        ({"JUMPGATE_AUDIT_RETENTION": "1y"}, "JUMPGATE_AUDIT_RETENTION: invalid duration '1y'"),
        ({"JUMPGATE_RECORDING_GRACE": "soon"}, "JUMPGATE_RECORDING_GRACE:"),
    ],
)
def test_a_bad_environment_fails_the_cold_start_naming_the_variable(
    change: dict[str, str | None], message: str
) -> None:
    environ = {**ENVIRONMENT, **change}
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(")):
        FunctionSettings.from_environ({k: v for k, v in environ.items() if v is not None})


def test_the_environment_is_read_into_typed_settings() -> None:
    settings = FunctionSettings.from_environ(
        {
            **ENVIRONMENT,
            "JUMPGATE_AUDIT_RETENTION": "90d",
            "JUMPGATE_RECORDING_GRACE": "1h30m",
            "JUMPGATE_SSH_PUBLIC_PORT": "22",
            "JUMPGATE_PROXY_HOST_KEYS": "ssh-ed25519 AAAA one, ssh-ed25519 BBBB two,",
            "HOME": "/root",  # the rest of a function's environment is not its settings
        }
    )
    assert settings.audit_retention == timedelta(days=90)
    assert settings.recording_grace == timedelta(minutes=90)
    assert (settings.ssh_public_port, settings.tunnel_public_port) == (22, 3024)
    assert settings.proxy_host_keys == ("ssh-ed25519 AAAA one", "ssh-ed25519 BBBB two")
    assert settings.region == REGION


def test_a_master_key_secret_that_is_not_a_key_fails_the_cold_start(aws: None) -> None:
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId="jumpgate/master-key", SecretString="too-short-to-be-a-key"
    )
    with pytest.raises(SettingsError, match="must hold 32 random bytes in base64"):
        open_plane(FunctionSettings.from_environ(ENVIRONMENT))


def test_a_master_key_secret_that_cannot_be_read_fails_the_cold_start_in_one_line(
    aws: None,
) -> None:
    with pytest.raises(SettingsError) as refused:
        open_plane(FunctionSettings.from_environ({**ENVIRONMENT, ENV_SECRET: "jumpgate/nosuch"}))
    assert str(refused.value).startswith(
        f"{ENV_SECRET}: cannot read secret jumpgate/nosuch (An error occurred "
        "(ResourceNotFoundException)"
    )
    assert "\n" not in str(refused.value)


def test_a_generated_secret_gives_a_stable_key(aws: None) -> None:
    """template.yaml has Secrets Manager generate 64 characters; the same key comes of them."""
    generated = secrets.token_hex(32)
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId="jumpgate/master-key", SecretString=generated
    )
    first = master_key("jumpgate/master-key", parameters.SecretsProvider())
    assert master_key("jumpgate/master-key", parameters.SecretsProvider()) == first


def test_the_sweeper_cold_starts_and_sweeps(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    sweeper = importlib.import_module("jumpgate.control_plane.lambdas.sweeper")
    sweeper = importlib.reload(sweeper)  # a new container: settings read from this environment
    answer = sweeper.handler({"source": "aws.events"}, Context("jumpgate-sweeper"))
    assert answer == {"completed": 0}
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    assert any(line.get("RecordingsCompleted") == [0.0] for line in emitted), emitted


@pytest.mark.parametrize("collecting", [True, False])
def test_a_cold_start_pauses_the_collector_and_leaves_it_as_it_found_it(collecting: bool) -> None:
    probe = (
        f"import gc; {'' if collecting else 'gc.disable(); '}"
        "import jumpgate.control_plane.lambdas.runtime; "
        "print(gc.isenabled(), gc.get_freeze_count() > 10_000, gc.get_stats()[2]['collections'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    enabled, frozen, full_collections = done.stdout.split()
    assert enabled == str(collecting)
    assert frozen == "True"  # the cold start's objects are out of every later collection
    assert full_collections == "0"

"""What every control-plane function makes once per cold start, and its handler.

Settings come from the function's environment and are checked before the first request: a
missing or bad variable fails the cold start with one line naming it. The master key comes
from Secrets Manager through Powertools Parameters (cached); the stores are DynamoDB (state,
audit) and S3 (recordings), as the infrastructure created them.
"""

import gc
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import boto3
import botocore.session
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jumpgate.control_plane import lambdas
from jumpgate.control_plane.audit.dynamodb import DynamoDBAuditStore
from jumpgate.control_plane.handlers import problems
from jumpgate.control_plane.handlers.api import make_handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.s3 import S3RecordingStore
from jumpgate.control_plane.secrets import MasterKey, SecretBox, master_key_from_secret
from jumpgate.control_plane.store import throttle
from jumpgate.control_plane.store.dynamodb import DynamoDBStore, SessionConnection
from jumpgate.protocol import ports
from jumpgate.protocol.durations import parse_duration
from jumpgate.protocol.functions import Function, function_for
from jumpgate.protocol.problems import ProblemType

gc.freeze()  # what the imports made lives as long as the environment (see ``lambdas``)
if lambdas.COLLECTING:
    gc.enable()

Event = dict[str, Any]
SECRET_MAX_AGE = 300
"""Seconds a fetched master key is reused before Secrets Manager is asked again."""


class SettingsError(Exception):
    """The function's environment is incomplete or wrong; ``str()`` names the variable."""


class FunctionSettings(BaseModel):
    """A function's environment, checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_addr: str = Field(min_length=1)
    state_table: str = Field(min_length=3, max_length=255)
    audit_table: str = Field(min_length=3, max_length=255)
    recordings_uri: str
    master_key_secret: str = Field(min_length=1)
    region: str = Field(min_length=1)
    ssh_public_port: int = Field(default=ports.SSH, ge=1, le=65535)
    tunnel_public_port: int = Field(default=ports.TUNNEL, ge=1, le=65535)
    audit_retention: str = "365d"
    recording_grace: str = "1h"
    proxy_host_keys: tuple[str, ...] = ()

    @field_validator("recordings_uri")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not value.startswith("s3://") or len(value) <= len("s3://"):
            raise ValueError("must be s3://BUCKET/PREFIX")
        return value

    @field_validator("audit_retention", "recording_grace")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "FunctionSettings":
        values: dict[str, Any] = {}
        for field, variable in ENVIRONMENT.items():
            if variable in environ:
                values[field] = environ[variable]
        if "proxy_host_keys" in values:
            keys = str(values["proxy_host_keys"]).split(",")
            values["proxy_host_keys"] = tuple(key.strip() for key in keys if key.strip())
        required = [v for f, v in ENVIRONMENT.items() if cls.model_fields[f].is_required()]
        missing = [variable for variable in required if not environ.get(variable)]
        if missing:
            raise SettingsError(f"set {', '.join(missing)} in the function's environment")
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            variable = ENVIRONMENT.get(str(first["loc"][0]), str(first["loc"][0]))
            message = str(first["msg"]).removeprefix("Value error, ")
            raise SettingsError(f"{variable}: {message}") from None


ENVIRONMENT = {
    "public_addr": "JUMPGATE_PUBLIC_ADDR",
    "state_table": "JUMPGATE_STATE_TABLE",
    "audit_table": "JUMPGATE_AUDIT_TABLE",
    "recordings_uri": "JUMPGATE_RECORDINGS_URI",
    "master_key_secret": "JUMPGATE_MASTER_KEY_SECRET",
    "region": "AWS_REGION",
    "ssh_public_port": "JUMPGATE_SSH_PUBLIC_PORT",
    "tunnel_public_port": "JUMPGATE_TUNNEL_PUBLIC_PORT",
    "audit_retention": "JUMPGATE_AUDIT_RETENTION",
    "recording_grace": "JUMPGATE_RECORDING_GRACE",
    "proxy_host_keys": "JUMPGATE_PROXY_HOST_KEYS",
}
"""Each setting and the environment variable it is read from."""


def master_key(secret: str, provider: parameters.SecretsProvider) -> MasterKey:
    """The platform master key from a Secrets Manager secret (``master_key_from_secret``);
    ``SettingsError`` in one line when it cannot be read or holds no key."""
    try:
        value = str(provider.get(secret, max_age=SECRET_MAX_AGE))
    except parameters.GetParameterError as exc:
        reason = str(exc).partition("\n")[0]
        raise SettingsError(
            f"{ENVIRONMENT['master_key_secret']}: cannot read secret {secret} ({reason}): "
            "check its name and the function's permission to read it"
        ) from None
    try:
        return master_key_from_secret(value, secret)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def open_plane(settings: FunctionSettings) -> ControlPlane:
    """The control plane over the platform's tables and bucket, its clients made now.

    Every client shares one botocore session, which loads the endpoint rules and its
    handlers once, a good part of a cold start: Secrets Manager and S3 through boto3, and
    both tables through one pynamodb connection (one DynamoDB client).
    """
    region = settings.region
    uri = settings.recordings_uri
    if "region=" not in uri:
        uri += ("&" if "?" in uri else "?") + f"region={region}"
    shared = botocore.session.get_session()
    session = boto3.Session(botocore_session=shared, region_name=region)
    secrets = parameters.SecretsProvider(boto3_session=session)
    dynamodb = SessionConnection(shared, region=region)
    return ControlPlane(
        DynamoDBStore(settings.state_table, region=region, connection=dynamodb),
        SecretBox(master_key(settings.master_key_secret, secrets)),
        audit=DynamoDBAuditStore(settings.audit_table, region=region, connection=dynamodb),
        recordings=S3RecordingStore.from_uri(uri, session=session),
        settings=Settings(
            public_addr=settings.public_addr,
            ssh_public_port=settings.ssh_public_port,
            tunnel_public_port=settings.tunnel_public_port,
            proxy_host_keys=settings.proxy_host_keys,
            recording_grace=parse_duration(settings.recording_grace),
        ),
        retention=parse_duration(settings.audit_retention),
    )


def entry_point(function: Function) -> Callable[[Event, Any], Event]:
    """The Lambda handler of ``function``, with everything it needs made now (cold start)."""
    service = f"jumpgate-{function.value}"
    logger = Logger(service=service)
    metrics = Metrics(namespace="Jumpgate", service=service)
    plane = open_plane(FunctionSettings.from_environ(os.environ))
    routes = make_internal_handler(plane) if function is Function.INTERNAL else make_handler(plane)

    @metrics.log_metrics(capture_cold_start_metric=True)
    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
    def handler(event: Event, context: Any) -> Event:
        path = str(event.get("rawPath", ""))
        if function_for(path) is not function:
            logger.warning("route of another function", extra={"path": path[:200]})
            metrics.add_metric(name="MisroutedRequests", unit=MetricUnit.Count, value=1)
            return problems.problem(
                404,
                ProblemType.NOT_FOUND,
                "Not found",
                f"{path[:200]} is not served by the {function.value} function",
            )
        throttled_before = throttle.counts.total()
        answer = routes(event, context)
        status = int(answer.get("statusCode", 500))
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        throttled = throttle.counts.total() - throttled_before
        if throttled:
            metrics.add_metric(name="StoreThrottles", unit=MetricUnit.Count, value=throttled)
        if status >= 500:
            metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
        return answer

    return cast(Callable[[Event, Any], Event], handler)

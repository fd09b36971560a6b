"""What every control-plane function makes once per cold start, and its handler.

Settings come from the function's environment and are checked before the first request: a
missing or bad variable fails the cold start with one line naming it. The master key comes
from Secrets Manager through Powertools Parameters (cached); the stores are DynamoDB (state,
audit) and S3 (recordings), as the infrastructure created them.
"""

import gc
import os
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, cast

import boto3
import botocore.session
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities import parameters
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError

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
from jumpgate.protocol.durations import Duration
from jumpgate.protocol.functions import Function, function_for
from jumpgate.protocol.problems import ProblemType
from jumpgate.protocol.settings import SettingsModel, one_line, whole

gc.freeze()  # what the imports made lives as long as the environment (see ``lambdas``)
if lambdas.COLLECTING:
    gc.enable()

Event = dict[str, Any]
SECRET_MAX_AGE = 300
"""Seconds a fetched master key is reused before Secrets Manager is asked again."""


class SettingsError(Exception):
    """The function's environment is incomplete or wrong; ``str()`` names the variable."""


def _comma_list(value: object) -> object:
    """``JUMPGATE_PROXY_HOST_KEYS`` holds the keys one after another, comma-separated."""
    if isinstance(value, str):
        return tuple(key.strip() for key in value.split(",") if key.strip())
    return value


def _s3(value: str) -> str:
    if not value.startswith("s3://") or len(value) <= len("s3://"):
        raise ValueError("must be s3://BUCKET/PREFIX")
    return value


Port = Annotated[int, whole(1, 65535, text=True)]


class FunctionSettings(SettingsModel):
    """A function's environment, checked: each field is read from the variable its alias
    names (``ENVIRONMENT``), and an error names that variable."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    public_addr: str = Field(min_length=1, validation_alias="JUMPGATE_PUBLIC_ADDR")
    state_table: str = Field(min_length=3, max_length=255, validation_alias="JUMPGATE_STATE_TABLE")
    audit_table: str = Field(min_length=3, max_length=255, validation_alias="JUMPGATE_AUDIT_TABLE")
    recordings_uri: Annotated[str, AfterValidator(_s3)] = Field(
        validation_alias="JUMPGATE_RECORDINGS_URI"
    )
    master_key_secret: str = Field(min_length=1, validation_alias="JUMPGATE_MASTER_KEY_SECRET")
    region: str = Field(min_length=1, validation_alias="AWS_REGION")
    ssh_public_port: Port = Field(default=ports.SSH, validation_alias="JUMPGATE_SSH_PUBLIC_PORT")
    tunnel_public_port: Port = Field(
        default=ports.TUNNEL, validation_alias="JUMPGATE_TUNNEL_PUBLIC_PORT"
    )
    audit_retention: Duration = Field(
        default=timedelta(days=365), validation_alias="JUMPGATE_AUDIT_RETENTION"
    )
    recording_grace: Duration = Field(
        default=timedelta(hours=1), validation_alias="JUMPGATE_RECORDING_GRACE"
    )
    proxy_host_keys: Annotated[tuple[str, ...], BeforeValidator(_comma_list)] = Field(
        default=(), validation_alias="JUMPGATE_PROXY_HOST_KEYS"
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "FunctionSettings":
        """The settings the variables of ``environ`` give; ``SettingsError`` in one line."""
        required = [v for f, v in ENVIRONMENT.items() if cls.model_fields[f].is_required()]
        missing = [variable for variable in required if not environ.get(variable)]
        if missing:
            raise SettingsError(f"set {', '.join(missing)} in the function's environment")
        values = {v: environ[v] for v in ENVIRONMENT.values() if v in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise SettingsError(one_line(exc, cls, unknown="environment")) from None


ENVIRONMENT = {
    name: str(field.validation_alias) for name, field in FunctionSettings.model_fields.items()
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
            recording_grace=settings.recording_grace,
        ),
        retention=settings.audit_retention,
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

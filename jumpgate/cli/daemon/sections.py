"""The mapping sections of ``jumpgate.yaml``: ``storage``, ``control_plane``,
``connection_limits`` and each of ``static_tokens``. Each checks itself; what depends on
other keys (``services`` and ``control_plane``) is checked by ``Config``."""

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from jumpgate.edge_proxy.connections import ConnectionLimits
from jumpgate.protocol.durations import Duration, within
from jumpgate.protocol.functions import Function
from jumpgate.protocol.models import SystemRole
from jumpgate.protocol.settings import SettingsModel, whole


class StaticTokenConfig(SettingsModel):
    """A join token written in the config file."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    tenant: str  # the tenant it joins nodes to
    token: str  # the secret value, at least 16 characters
    # what it may join as (its system roles; the old key ``roles`` is read too)
    system_roles: tuple[str, ...] = Field(
        default=("node",), validation_alias=AliasChoices("system_roles", "roles")
    )

    @field_validator("system_roles")
    @classmethod
    def _known(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        known = [role.value for role in SystemRole]
        if not roles:
            raise ValueError(f"name at least one of {', '.join(known)}")
        for role in roles:
            if role not in known:
                raise ValueError(f"{role[:40]!r} is not {' or '.join(known)}")
        return roles


class StorageConfig(SettingsModel):
    """Where state lives: SQLite in the data dir, or a DynamoDB table."""

    type: Literal["sqlite", "dynamodb"] = "sqlite"
    path: str = ""  # sqlite file; default <data_dir>/state.db
    table_name: str = ""  # dynamodb table
    region: str = ""  # dynamodb region
    endpoint: str = ""  # dynamodb endpoint override (local/moto); default AWS
    audit_path: str = ""  # sqlite audit file; default <data_dir>/audit.db
    audit_table_name: str = ""  # dynamodb audit table; default <table_name>-audit
    master_key_secret: str = ""  # Secrets Manager secret (name or ARN) holding the master
    # key, as on AWS; default: <data_dir>/master.key

    @model_validator(mode="after")
    def _complete(self) -> "StorageConfig":
        if self.type == "dynamodb" and not (self.table_name and self.region):
            raise ValueError("dynamodb needs table_name and region")
        if self.master_key_secret and not self.region:
            raise ValueError("master_key_secret needs region")
        return self


def _names_to_text(value: object) -> object:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError("must be a mapping of names to text")
    return value


class ControlPlaneConfig(SettingsModel):
    """How a proxy reaches the control plane: in this process (service ``auth`` beside it),
    or as the platform's Lambda functions (a proxy-only process on AWS)."""

    type: Literal["in-process", "lambda"] = "in-process"
    region: str = ""  # lambda: the functions' region
    endpoint: str = ""  # lambda: endpoint override (tests, local emulators); default AWS
    function_prefix: str = "jumpgate-"  # lambda: the functions are named <prefix><function>
    # lambda: names, by function
    functions: Annotated[dict[str, str], BeforeValidator(_names_to_text)] = Field(
        default_factory=dict
    )

    @field_validator("functions")
    @classmethod
    def _known(cls, functions: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(functions) - {f.value for f in Function})
        if unknown:
            raise ValueError(f"no function named {', '.join(unknown)}")
        return functions

    @model_validator(mode="after")
    def _lambda(self) -> "ControlPlaneConfig":
        if self.type == "lambda" and not self.region:
            raise ValueError("lambda needs region")
        return self


Cap = Annotated[int, whole(1)]
Timeout = Annotated[Duration, within(positive=True)]


class ConnectionLimitsConfig(SettingsModel):
    """What the proxy's listeners (web, users' SSH, node tunnels) allow one source (an IPv4
    address or an IPv6 /64) and all sources together, how long a client may take to say who
    it is, and how many channels one user connection may hold open (decision 0019)."""

    max_connections_per_source: Cap = 4096  # live connections one address may hold per listener
    max_unauthenticated_per_source: Cap = 512  # of those, not yet past TLS + request head/login
    header_timeout: Timeout = timedelta(seconds=10)  # HTTPS: a complete request head within this
    body_timeout: Timeout = timedelta(seconds=20)  # HTTPS: a request's body within this, or cut
    idle_timeout: Timeout = timedelta(seconds=20)  # HTTPS: a keep-alive connection idle this long
    tls_handshake_timeout: Timeout = timedelta(seconds=10)  # HTTPS: the TLS handshake within this
    login_grace_time: Timeout = timedelta(seconds=30)  # SSH: authenticated within this (LoginGrace)
    max_unauthenticated_connections: Cap = 2048  # per listener, all sources (MaxStartups)
    max_sessions_per_connection: Cap = 10  # users' SSH: session channels open at once
    max_forwarded_channels_per_connection: Cap = 64  # users' SSH: direct-tcpip open at once

    @model_validator(mode="after")
    def _coherent(self) -> "ConnectionLimitsConfig":
        self.limits()  # its own checks, as one line naming this section
        return self

    def limits(self) -> ConnectionLimits:
        """The proxy's own form of these limits (seconds)."""
        return ConnectionLimits(
            max_per_source=self.max_connections_per_source,
            max_unauthenticated_per_source=self.max_unauthenticated_per_source,
            header_timeout=self.header_timeout.total_seconds(),
            body_timeout=self.body_timeout.total_seconds(),
            idle_timeout=self.idle_timeout.total_seconds(),
            tls_handshake_timeout=self.tls_handshake_timeout.total_seconds(),
            login_grace=self.login_grace_time.total_seconds(),
            max_unauthenticated=self.max_unauthenticated_connections,
            max_sessions_per_connection=self.max_sessions_per_connection,
            max_forwards_per_connection=self.max_forwarded_channels_per_connection,
        )

"""The daemon's configuration: flags over ``jumpgate.yaml`` over defaults, validated once.

Every flag of ``jumpgate start`` is also a key of the file (``--web-listen-addr`` is
``web_listen_addr``). A bad value stops the daemon with one line naming the key.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, get_type_hints
from urllib.parse import parse_qs, urlsplit

import yaml

from jumpgate.control_plane.audit.base import sink_path
from jumpgate.edge_proxy.connections import ConnectionLimits
from jumpgate.protocol import ports
from jumpgate.protocol.durations import parse_duration
from jumpgate.protocol.functions import Function
from jumpgate.protocol.names import check_tenant_name, split_host_port

ROLES = ("auth", "proxy", "node")
"""Services one process can run: the control plane, the proxy, a node agent."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


@dataclass(frozen=True)
class StaticTokenConfig:
    """A join token written in the config file."""

    tenant: str  # the tenant it joins nodes to
    token: str  # the secret value, at least 16 characters
    roles: tuple[str, ...] = ("node",)  # what it may join as


@dataclass(frozen=True)
class StorageConfig:
    """Where state lives: SQLite in the data dir, or a DynamoDB table."""

    type: str = "sqlite"  # sqlite | dynamodb
    path: str = ""  # sqlite file; default <data_dir>/state.db
    table_name: str = ""  # dynamodb table
    region: str = ""  # dynamodb region
    endpoint: str = ""  # dynamodb endpoint override (local/moto); default AWS
    audit_path: str = ""  # sqlite audit file; default <data_dir>/audit.db
    audit_table_name: str = ""  # dynamodb audit table; default <table_name>-audit
    master_key_secret: str = ""  # Secrets Manager secret (name or ARN) holding the master
    # key, as on AWS; default: <data_dir>/master.key


@dataclass(frozen=True)
class ControlPlaneConfig:
    """How a proxy reaches the control plane: in this process (role ``auth`` beside it), or
    as the platform's Lambda functions (a proxy-only process on AWS)."""

    type: str = "in-process"  # in-process | lambda
    region: str = ""  # lambda: the functions' region
    endpoint: str = ""  # lambda: endpoint override (tests, local emulators); default AWS
    function_prefix: str = "jumpgate-"  # lambda: the functions are named <prefix><function>
    functions: dict[str, str] = field(default_factory=dict)  # lambda: names, by function


@dataclass(frozen=True)
class ConnectionLimitsConfig:
    """What the proxy's listeners (web, users' SSH, node tunnels) allow one source (an IPv4
    address or an IPv6 /64) and all sources together, how long a client may take to say who
    it is, and how many channels one user connection may hold open (decision 0019)."""

    max_connections_per_source: int = 4096  # live connections one address may hold per listener
    max_unauthenticated_per_source: int = 512  # of those, not yet past TLS + request head or login
    header_timeout: str = "10s"  # HTTPS: a complete request head within this, or cut
    body_timeout: str = "20s"  # HTTPS: a request's body within this, or cut
    idle_timeout: str = "20s"  # HTTPS: a keep-alive connection idle this long is closed
    tls_handshake_timeout: str = "10s"  # HTTPS: the TLS handshake within this, or cut
    login_grace_time: str = "30s"  # SSH: authenticated within this, or cut (LoginGraceTime)
    max_unauthenticated_connections: int = 2048  # per listener, all sources (MaxStartups)
    max_sessions_per_connection: int = 10  # users' SSH: session channels open at once
    max_forwarded_channels_per_connection: int = 64  # users' SSH: direct-tcpip open at once

    def __post_init__(self) -> None:
        for key in (
            "max_connections_per_source",
            "max_unauthenticated_per_source",
            "max_unauthenticated_connections",
            "max_sessions_per_connection",
            "max_forwarded_channels_per_connection",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"connection_limits.{key}: must be a whole number >= 1")
        try:
            self.limits()
        except ValueError as exc:
            raise ConfigError(f"connection_limits: {exc}") from exc

    def limits(self) -> ConnectionLimits:
        """The proxy's own form of these limits (seconds)."""
        seconds: dict[str, float] = {}
        for key in (
            "header_timeout",
            "body_timeout",
            "idle_timeout",
            "tls_handshake_timeout",
            "login_grace_time",
        ):
            try:
                seconds[key] = parse_duration(getattr(self, key)).total_seconds()
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
            if seconds[key] <= 0:
                raise ValueError(f"{key}: must be more than 0s")
        return ConnectionLimits(
            max_per_source=self.max_connections_per_source,
            max_unauthenticated_per_source=self.max_unauthenticated_per_source,
            header_timeout=seconds["header_timeout"],
            body_timeout=seconds["body_timeout"],
            idle_timeout=seconds["idle_timeout"],
            tls_handshake_timeout=seconds["tls_handshake_timeout"],
            login_grace=seconds["login_grace_time"],
            max_unauthenticated=self.max_unauthenticated_connections,
            max_sessions_per_connection=self.max_sessions_per_connection,
            max_forwards_per_connection=self.max_forwarded_channels_per_connection,
        )


@dataclass(frozen=True)
class Config:
    """Everything ``jumpgate start`` needs to know."""

    data_dir: Path = Path("/var/lib/jumpgate")  # state, master key, TLS certificate
    roles: tuple[str, ...] = ("auth", "proxy")  # which services run in this process
    public_addr: str = "localhost"  # tenants are served as NAME.<public_addr>
    web_listen_addr: str = f"127.0.0.1:{ports.WEB}"  # HTTPS API and health
    ssh_listen_addr: str = f"127.0.0.1:{ports.SSH}"  # users' SSH
    tunnel_listen_addr: str = f"127.0.0.1:{ports.TUNNEL}"  # node tunnels
    peer_listen_addr: str = ""  # other proxies relay here (proxy peering); off when empty
    peer_public_addr: str = ""  # HOST:PORT peers dial; "auto": this host's address
    control_plane: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    static_tokens: tuple[StaticTokenConfig, ...] = ()
    connection_limits: ConnectionLimitsConfig = field(default_factory=ConnectionLimitsConfig)
    log_level: str = "info"  # debug | info | warning | error
    diag_addr: str = ""  # /healthz, /readyz, /metrics, e.g. 127.0.0.1:3000; off when empty
    node_gone_after: str = "10m"  # offline nodes leave `nodes ls` after this long
    audit_events_uri: tuple[str, ...] = ()  # dynamodb://TABLE (the store), file:///PATH, stdout://
    audit_retention: str = "365d"  # how long audit events are kept
    audit_sessions_uri: str = ""  # recordings: file:///DIR or s3://bucket/prefix?region=...
    recording_grace: str = "1h"  # a recording whose node sent nothing this long is completed
    drain_timeout: str = "10s"  # on SIGTERM, live sessions and their audit get this long to end
    api_workers: int = 8  # threads running public API handlers (logins' bcrypt among them)
    api_workers_per_tenant: int = 2  # most of the API workers one tenant's calls hold at once
    internal_workers: int = 4  # threads for the proxy's own calls, never behind the API's
    api_nice: int = 10  # niceness of the API workers, so the proxy's own work runs first; 0: off
    login_source_rate: float = 10.0  # login attempts a second from one address; 0: no limit
    login_source_burst: int = 20  # attempts one address may make at once before the rate
    login_user_rate: float = 5.0  # login attempts a minute for one user of a tenant; 0: none
    login_user_burst: int = 5  # attempts for one user at once before that rate applies
    login_workers_per_tenant: int = 2  # API workers one tenant's logins and signups hold at once
    login_tenant_rate: float = 10.0  # logins a second to one tenant, all sources; 0: no limit
    login_tenant_burst: int = 20  # logins to one tenant at once before that rate applies
    tenant_queue: int = 32  # calls of one tenant's lane waiting for a worker; beyond: 429
    tenant_queue_per_source: int = 8  # of a lane's places, most one address holds; beyond: 429
    anonymous_source_rate: float = 50.0  # /v1/trust, /v1/ca, join... a second per source; 0: none
    anonymous_source_burst: int = 100  # such calls one source may make at once
    # node role:
    auth_server: str = ""  # HOST:PORT of the tenant's web endpoint, e.g. acme.localhost:3080
    token: str = ""  # join token, needed on the first start only
    ca_pin: str = ""  # sha256:... pin of the tenant's host CA, checked before joining
    nodename: str = ""  # default: the host name
    labels: str = ""  # env=prod,arch=[1h:"uname -m"]
    insecure: bool = False  # accept the platform's self-signed HTTPS certificate

    def __post_init__(self) -> None:
        for role in self.roles:
            if role not in ROLES:
                raise ConfigError(
                    f"roles: {role!r} is not served by this release; use {','.join(ROLES)}"
                )
        if not self.roles:
            raise ConfigError("roles: name at least one of " + ",".join(ROLES))
        if "node" in self.roles and self.ca_pin and not self.ca_pin.startswith("sha256:"):
            raise ConfigError(f"ca_pin: {self.ca_pin!r} is not sha256:<hex> (see jumpctl status)")
        if "node" in self.roles and self.auth_server:
            try:
                split_host_port(self.auth_server, 0)
            except ValueError as exc:
                raise ConfigError(f"auth_server: {exc}") from exc
        for key in (
            "web_listen_addr",
            "ssh_listen_addr",
            "tunnel_listen_addr",
            "diag_addr",
            "peer_listen_addr",
        ):
            if not getattr(self, key) and key in ("diag_addr", "peer_listen_addr"):
                continue
            try:
                split_host_port(getattr(self, key), 0, listen=True)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from exc
        if self.peer_public_addr not in ("", "auto"):
            try:
                split_host_port(self.peer_public_addr, 0)
            except ValueError as exc:
                raise ConfigError(f"peer_public_addr: {exc}") from exc
        self._check_control_plane()
        if not self.public_addr or ":" in self.public_addr or "/" in self.public_addr:
            raise ConfigError(f"public_addr: {self.public_addr!r} must be a host name, no port")
        if self.storage.type not in ("sqlite", "dynamodb"):
            raise ConfigError(f"storage.type: {self.storage.type!r} is not sqlite or dynamodb")
        if self.storage.type == "dynamodb" and not (
            self.storage.table_name and self.storage.region
        ):
            raise ConfigError("storage: dynamodb needs table_name and region")
        if self.storage.master_key_secret and not self.storage.region:
            raise ConfigError("storage: master_key_secret needs region")
        for token in self.static_tokens:
            try:
                check_tenant_name(token.tenant)
            except ValueError as exc:
                raise ConfigError(f"static_tokens: {exc}") from exc
            if len(token.token) < 16:
                raise ConfigError("static_tokens: a token must be at least 16 characters")
        self._check_duration("node_gone_after")
        self._check_duration("audit_retention", timedelta(days=1), why="keep audit events")
        self._check_duration("recording_grace", timedelta(minutes=1))
        self._check_duration("drain_timeout", timedelta(seconds=1), timedelta(minutes=10))
        scheme = self.audit_sessions_uri.partition("://")[0]
        if self.audit_sessions_uri and (
            scheme not in ("file", "s3") or not self.audit_sessions_uri.partition("://")[2]
        ):
            raise ConfigError(
                f"audit_sessions_uri: {self.audit_sessions_uri!r} is not file:///DIR "
                "or s3://BUCKET/PREFIX"
            )
        for uri in self.sink_uris():
            try:
                sink_path(uri)
            except ValueError as exc:
                raise ConfigError(f"audit_events_uri: {exc} (or dynamodb://TABLE)") from exc
        tables = [u for u in self.audit_events_uri if u.startswith("dynamodb://")]
        if len(tables) > 1:
            raise ConfigError("audit_events_uri: name at most one dynamodb://TABLE")
        if tables and self.audit_table() is None:
            raise ConfigError(f"audit_events_uri: {tables[0]!r} needs a table name and a region")
        self._check_capacity()
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: {self.log_level!r} is not debug/info/warning/error")

    def _check_duration(
        self,
        key: str,
        least: timedelta | None = None,
        most: timedelta | None = None,
        why: str = "must be",
    ) -> None:
        try:
            value = parse_duration(getattr(self, key))
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from exc
        if most is not None and least is not None and not least <= value <= most:
            raise ConfigError(f"{key}: must be from {_shown(least)} to {_shown(most)}")
        if least is not None and value < least:
            raise ConfigError(f"{key}: {why} at least {_shown(least)}")

    def _check_capacity(self) -> None:
        for key in (
            "api_workers",
            "api_workers_per_tenant",
            "login_workers_per_tenant",
            "internal_workers",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
                raise ConfigError(f"{key}: {value!r} must be a whole number from 1 to 256")
        if not isinstance(self.api_nice, int) or not 0 <= self.api_nice <= 19:
            raise ConfigError(f"api_nice: {self.api_nice!r} must be a whole number from 0 to 19")
        if self.api_workers_per_tenant > self.api_workers:
            raise ConfigError(
                f"api_workers_per_tenant: {self.api_workers_per_tenant} is more than "
                f"api_workers ({self.api_workers}): one tenant could hold them all"
            )
        if self.api_workers_per_tenant + self.login_workers_per_tenant > self.api_workers:
            raise ConfigError(
                f"login_workers_per_tenant: {self.login_workers_per_tenant} with "
                f"api_workers_per_tenant ({self.api_workers_per_tenant}) is more than "
                f"api_workers ({self.api_workers}): one tenant could hold them all"
            )
        if (
            not isinstance(self.tenant_queue, int)
            or isinstance(self.tenant_queue, bool)
            or not 0 <= self.tenant_queue <= 100_000
        ):
            raise ConfigError(
                f"tenant_queue: {self.tenant_queue!r} must be a whole number from 0 to 100000"
            )
        per_source = self.tenant_queue_per_source
        if (
            not isinstance(per_source, int)
            or isinstance(per_source, bool)
            or not 1 <= per_source <= 100_000
        ):
            raise ConfigError(
                f"tenant_queue_per_source: {per_source!r} must be a whole number from 1 to 100000"
            )
        for key in (
            "login_source_rate",
            "login_user_rate",
            "login_tenant_rate",
            "anonymous_source_rate",
        ):
            value = getattr(self, key)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{key}: {value!r} must be a number, 0 or more (0: no limit)")
        for key in (
            "login_source_burst",
            "login_user_burst",
            "login_tenant_burst",
            "anonymous_source_burst",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key}: {value!r} must be a whole number, 1 or more")

    def _check_control_plane(self) -> None:
        control = self.control_plane
        if control.type not in ("in-process", "lambda"):
            raise ConfigError(f"control_plane.type: {control.type!r} is not in-process or lambda")
        if control.type == "in-process":
            if "proxy" in self.roles and "auth" not in self.roles:
                raise ConfigError(
                    "roles: a proxy without auth needs control_plane.type: lambda "
                    "(or add auth to roles)"
                )
            return
        if "auth" in self.roles:
            raise ConfigError("control_plane.type lambda is for proxy-only processes: drop auth")
        if not control.region:
            raise ConfigError("control_plane: lambda needs region")
        unknown = sorted(set(control.functions) - {f.value for f in Function})
        if unknown:
            raise ConfigError(f"control_plane.functions: no function named {', '.join(unknown)}")

    def audit_table(self) -> tuple[str, str] | None:
        """The DynamoDB audit table (name, region), if events go to one: the one
        ``audit_events_uri`` names as ``dynamodb://TABLE[?region=...]`` (region default: the
        state store's), else ``<table_name>-audit`` (or ``audit_table_name``) beside a
        DynamoDB state store; ``None`` for SQLite."""
        storage = self.storage
        for uri in self.audit_events_uri:
            if uri.startswith("dynamodb://"):
                parts = urlsplit(uri)
                region = parse_qs(parts.query).get("region", [storage.region])[-1]
                return (parts.netloc, region) if parts.netloc and region else None
        if storage.type == "dynamodb":
            return storage.audit_table_name or f"{storage.table_name}-audit", storage.region
        return None

    def sink_uris(self) -> tuple[str, ...]:
        """The ``audit_events_uri`` entries that copy events (files, stdout), not the store."""
        return tuple(u for u in self.audit_events_uri if not u.startswith("dynamodb://"))

    def function_names(self) -> dict[str, str]:
        """Each control-plane function's Lambda name (lambda transport)."""
        control = self.control_plane
        return {
            f.value: control.functions.get(f.value) or f"{control.function_prefix}{f.value}"
            for f in Function
        }

    def port_of(self, key: str) -> int:
        """The port of one of the listen addresses."""
        return split_host_port(getattr(self, key), 0, listen=True)[1]


def _shown(duration: timedelta) -> str:
    """A bound as the duration syntax writes it: 1d, 10m, 1s."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


S = TypeVar("S")


def _typed(where: str, kind: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` for the dataclass ``kind``, each of the type its field declares, or one line
    naming the key. A number where text goes is taken as its text (YAML reads ``1234`` as a
    number); a list, a mapping or nothing where text goes is refused."""
    hints = get_type_hints(kind)
    typed = dict(values)
    for name, value in values.items():
        expected = hints.get(name)
        if expected is str and isinstance(value, int | float) and not isinstance(value, bool):
            typed[name] = str(value)
        elif expected is str and not isinstance(value, str):
            raise ConfigError(f"{where}{name}: must be text, not {value!r}")
        elif expected is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}{name}: must be true or false, not {value!r}")
        elif expected == tuple[str, ...] and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}{name}: must be a list of text, not {list(value)!r}")
        elif expected == dict[str, str] and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise ConfigError(f"{where}{name}: must be a mapping of names to text")
    return typed


def _section(key: str, kind: Callable[..., S], value: Any) -> S:
    """A mapping section (``storage:``, ``control_plane:``) of the config, or one line
    naming what is wrong with it."""
    allowed = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a mapping of {', '.join(allowed)}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; use {', '.join(allowed)}")
    return kind(**_typed(f"{key}.", kind, value))


TOKEN_VARIABLE = "JUMPGATE_TOKEN"  # noqa: S105 - a variable's name, not a secret
"""The join token when ``--token`` is not given: ``jumpctl nodes add`` prints it so."""


def join_token(value: str) -> str:
    """The join token ``value`` gives: the content of the file it names when it is an
    existing file's path, else itself. ``ConfigError`` when that file cannot be read, or when
    ``value`` has a ``/`` (no token has one: it is a path) and names no file."""
    if not value or not os.path.isfile(value):
        if "/" in value:
            raise ConfigError(
                f"no token file {value}: give the token's file or its value ({TOKEN_VARIABLE}=...)"
            )
        return value
    path = Path(value)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"token: cannot read {path}: {exc}") from exc
    if not token or len(token.splitlines()) != 1:
        raise ConfigError(f"token: {path} must hold the join token on one line")
    return token


CONFIG_VARIABLE = "JUMPGATE_CONFIG_YAML"
"""The config file's content in the environment, for containers (ECS task definitions pass
environment variables, not files); used when no ``-c`` file is given."""


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """The file's keys (if any) overlaid by flags that were given (not ``None``)."""
    values: dict[str, Any] = {}
    text, source = None, ""
    if path is not None:
        source = f"config file {path}"
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise ConfigError(f"{source} not found") from exc
    elif os.environ.get(CONFIG_VARIABLE):
        text, source = os.environ[CONFIG_VARIABLE], CONFIG_VARIABLE
    if text is not None:
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "syntax error"
            raise ConfigError(f"{source} is not valid YAML{where}: {problem}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source} must be a mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    try:
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"]).expanduser()
        if isinstance(values.get("roles"), str):
            values["roles"] = tuple(r.strip() for r in values["roles"].split(",") if r.strip())
        elif "roles" in values:
            values["roles"] = tuple(values["roles"])
        if isinstance(values.get("audit_events_uri"), str):
            values["audit_events_uri"] = (values["audit_events_uri"],)
        elif "audit_events_uri" in values:
            values["audit_events_uri"] = tuple(values["audit_events_uri"])
        values = _typed("", Config, values)
        for key, section in (
            ("storage", StorageConfig),
            ("control_plane", ControlPlaneConfig),
            ("connection_limits", ConnectionLimitsConfig),
        ):
            if key in values:
                values[key] = _section(key, section, values[key])
        if "static_tokens" in values:
            values["static_tokens"] = tuple(
                StaticTokenConfig(
                    tenant=t["tenant"], token=str(t["token"]), roles=tuple(t.get("roles", ["node"]))
                )
                for t in values["static_tokens"]
            )
        return Config(**values)
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"config: {exc}") from exc

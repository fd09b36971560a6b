"""The daemon's configuration: flags over ``jumpgate.yaml`` over defaults, validated once.

Every flag of ``jumpgate start`` is also a key of the file (``--web-listen-addr`` is
``web_listen_addr``). ``Config`` is a pydantic model (``protocol.settings``): each value is
of its type once loaded (durations are ``timedelta``), and a bad one stops the daemon with
one line naming the key (decision 0024).
"""

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from jumpgate.cli.daemon.sections import (
    ConnectionLimitsConfig,
    ControlPlaneConfig,
    StaticTokenConfig,
    StorageConfig,
)
from jumpgate.control_plane.audit.base import sink_path
from jumpgate.node_agent.config import AcceptEnv, PamConfig
from jumpgate.node_agent.session_env import DEFAULT_ACCEPT_ENV
from jumpgate.protocol import ports
from jumpgate.protocol.durations import Duration, within
from jumpgate.protocol.functions import Function
from jumpgate.protocol.names import check_tenant_name, split_host_port
from jumpgate.protocol.settings import Flag, SettingsModel, number, one_line, text_list, whole
from jumpgate.protocol.ssh_algorithms import Algorithms, Ciphers, KexAlgos, MacAlgos

__all__ = [
    "CONFIG_VARIABLE",
    "SERVICES",
    "TOKEN_VARIABLE",
    "Config",
    "ConfigError",
    "ConnectionLimitsConfig",
    "ControlPlaneConfig",
    "StaticTokenConfig",
    "StorageConfig",
    "join_token",
    "load",
]

SERVICES = ("auth", "proxy", "node")
"""Services one process can run: the control plane, the proxy, a node agent. Called
``roles`` until decision 0026 (a role is what a user may do); ``roles:`` and ``--roles`` are
still read, with a note."""

RENAMED = {"roles": "services"}
"""Keys of ``jumpgate.yaml`` renamed (old: new), still read under the old name."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def _services(value: object) -> tuple[str, ...]:
    """``services`` as a list or as text (``auth,proxy``, as the flag gives it)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(r, str) for r in value):
        raise ValueError(
            f"must be a list of {', '.join(SERVICES)} (or text: auth,proxy), not {value!r}"
        )
    for service in value:
        if service not in SERVICES:
            raise ValueError(f"{service!r} is not served by this release; use {','.join(SERVICES)}")
    if not value:
        raise ValueError("name at least one of " + ",".join(SERVICES))
    return tuple(value)


def _listen(value: str) -> str:
    if value and split_host_port(value, -1, listen=True)[1] == -1:
        # a listener on a port nobody chose would take any free one, and nobody could reach it
        raise ValueError(f"{value!r} has no port: use HOST:PORT (port 0: any free port)")
    return value


_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _host_name(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError(f"{value!r} must be a host name, no port")
    return value


def _peer_public(value: str) -> str:
    if value not in ("", "auto"):
        split_host_port(value, 0)
    return value


def _recordings_uri(value: str) -> str:
    scheme, _, rest = value.partition("://")
    if value and (scheme not in ("file", "s3") or not rest):
        raise ValueError(f"{value!r} is not file:///DIR or s3://BUCKET/PREFIX")
    return value


def _data_dir(value: Path) -> Path:
    return value.expanduser()


Listen = Annotated[str, AfterValidator(_listen)]
Workers = Annotated[int, whole(1, 256)]
Rate = Annotated[float, number(0, note="0: no limit")]
Burst = Annotated[int, whole(1)]
Retention = Annotated[Duration, within(timedelta(days=1), why="keep audit events")]
Grace = Annotated[Duration, within(timedelta(minutes=1))]
Drain = Annotated[Duration, within(timedelta(seconds=1), timedelta(minutes=10))]
Nice = Annotated[int, whole(0, 19)]
Queue = Annotated[int, whole(0, 100_000)]
QueueShare = Annotated[int, whole(1, 100_000)]


class Config(SettingsModel):
    """Everything ``jumpgate start`` needs to know."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    data_dir: Annotated[Path, AfterValidator(_data_dir)] = Path("/var/lib/jumpgate")  # state, keys
    # which services run in this process (the old key ``roles`` is read too)
    services: Annotated[tuple[str, ...], BeforeValidator(_services)] = Field(
        default=("auth", "proxy"), validation_alias=AliasChoices("services", "roles")
    )
    # tenants are served as NAME.<public_addr>
    public_addr: Annotated[str, AfterValidator(_host_name)] = "localhost"
    web_listen_addr: Listen = f"127.0.0.1:{ports.WEB}"  # HTTPS API and health
    ssh_listen_addr: Listen = f"127.0.0.1:{ports.SSH}"  # users' SSH
    tunnel_listen_addr: Listen = f"127.0.0.1:{ports.TUNNEL}"  # node tunnels
    peer_listen_addr: Listen = ""  # other proxies relay here (proxy peering); off when empty
    # HOST:PORT peers dial; "auto": this host's address
    peer_public_addr: Annotated[str, AfterValidator(_peer_public)] = ""
    control_plane: ControlPlaneConfig = ControlPlaneConfig()
    storage: StorageConfig = StorageConfig()
    static_tokens: tuple[StaticTokenConfig, ...] = ()
    connection_limits: ConnectionLimitsConfig = ConnectionLimitsConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # SSH algorithms of every listener and connection, proxy and node (Teleport's keys,
    # decision 0030); each a list of names, in order of preference; empty: the defaults
    ciphers: Ciphers = ()
    kex_algos: KexAlgos = ()
    mac_algos: MacAlgos = ()
    diag_addr: Listen = ""  # /healthz, /readyz, /metrics, e.g. 127.0.0.1:3000; off when empty
    node_gone_after: Duration = timedelta(minutes=10)  # offline nodes leave `nodes ls` after this
    # dynamodb://TABLE (the store), file:///PATH, stdout://
    audit_events_uri: Annotated[tuple[str, ...], BeforeValidator(text_list)] = ()
    # how long audit events are kept
    audit_retention: Retention = timedelta(days=365)
    # recordings: file:///DIR or s3://bucket/prefix?region=...
    audit_sessions_uri: Annotated[str, AfterValidator(_recordings_uri)] = ""
    # a recording whose node sent nothing this long is completed
    recording_grace: Grace = timedelta(hours=1)
    # on SIGTERM, live sessions and their audit get this long to end
    drain_timeout: Drain = timedelta(seconds=10)
    api_workers: Workers = 8  # threads running public API handlers (logins' bcrypt among them)
    api_workers_per_tenant: Workers = 2  # most of the API workers one tenant's calls hold at once
    internal_workers: Workers = 4  # threads for the proxy's own calls, never behind the API's
    api_nice: Nice = 10  # niceness of the API workers, so the proxy's own work runs first
    login_source_rate: Rate = 10.0  # login attempts a second from one address; 0: no limit
    login_source_burst: Burst = 20  # attempts one address may make at once before the rate
    login_user_rate: Rate = 5.0  # login attempts a minute for one user of a tenant; 0: none
    login_user_burst: Burst = 5  # attempts for one user at once before that rate applies
    login_workers_per_tenant: Workers = 2  # API workers one tenant's logins and signups hold
    login_tenant_rate: Rate = 10.0  # logins a second to one tenant, all sources; 0: no limit
    login_tenant_burst: Burst = 20  # logins to one tenant at once before that rate applies
    tenant_queue: Queue = 32  # calls of one tenant's lane waiting; beyond: 429
    tenant_queue_per_source: QueueShare = 8  # of a lane's places, most one address holds
    anonymous_source_rate: Rate = 50.0  # /v1/trust, /v1/ca, join... a second per source; 0: none
    anonymous_source_burst: Burst = 100  # such calls one source may make at once
    # node service:
    auth_server: str = ""  # HOST:PORT of the tenant's web endpoint, e.g. acme.localhost:3080
    token: str = ""  # join token, needed on the first start only
    ca_pin: str = ""  # sha256:... pin of the tenant's host CA, checked before joining
    nodename: str = ""  # default: the host name
    labels: str = ""  # env=prod,arch=[1h:"uname -m"]
    insecure: Flag = False  # accept the platform's self-signed HTTPS certificate
    # the client's variables a session takes, e.g. [LANG, LC_*] (sshd's AcceptEnv)
    accept_env: AcceptEnv = DEFAULT_ACCEPT_ENV
    pam: PamConfig = PamConfig()  # {enabled: true, service_name: sshd}: PAM around sessions

    _notes: tuple[str, ...] = PrivateAttr(default=())

    @property
    def notes(self) -> tuple[str, ...]:
        """What the daemon should say at start about how it was configured: keys read
        under an old name."""
        return self._notes

    def noted(self, note: str) -> "Config":
        """This config with one more note to say at start."""
        copy = self.model_copy()
        copy._notes = (*self._notes, note)
        return copy

    @model_validator(mode="before")
    @classmethod
    def _renamed_once(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for old, new in RENAMED.items():
                if old in values and new in values:
                    raise ValueError(f"{old}: renamed {new} (decision 0026): give only {new}")
        return values

    @field_validator("static_tokens")
    @classmethod
    def _tokens(cls, tokens: tuple[StaticTokenConfig, ...]) -> tuple[StaticTokenConfig, ...]:
        for token in tokens:
            check_tenant_name(token.tenant)
            if len(token.token.strip()) < 16:
                raise ValueError("a token must be at least 16 characters, not counting spaces")
        return tokens

    @field_validator("audit_events_uri")
    @classmethod
    def _sinks(cls, uris: tuple[str, ...]) -> tuple[str, ...]:
        for uri in uris:
            if not uri.startswith("dynamodb://"):
                try:
                    sink_path(uri)
                except ValueError as exc:
                    raise ValueError(f"{exc} (or dynamodb://TABLE)") from None
        if len([u for u in uris if u.startswith("dynamodb://")]) > 1:
            raise ValueError("name at most one dynamodb://TABLE")
        return uris

    @model_validator(mode="after")
    def _together(self) -> "Config":
        """What one key cannot say alone; each message names the key to change."""
        if "node" in self.services and self.ca_pin and not self.ca_pin.startswith("sha256:"):
            raise ValueError(f"ca_pin: {self.ca_pin!r} is not sha256:<hex> (see jumpctl status)")
        if "node" in self.services and self.auth_server:
            try:
                split_host_port(self.auth_server, 0)
            except ValueError as exc:
                raise ValueError(f"auth_server: {exc}") from None
        if self.control_plane.type == "in-process":
            if "proxy" in self.services and "auth" not in self.services:
                raise ValueError(
                    "services: a proxy without auth needs control_plane.type: lambda "
                    "(or add auth to services)"
                )
        elif "auth" in self.services:
            raise ValueError("control_plane.type lambda is for proxy-only processes: drop auth")
        tables = [u for u in self.audit_events_uri if u.startswith("dynamodb://")]
        if tables and self.audit_table() is None:
            raise ValueError(f"audit_events_uri: {tables[0]!r} needs a table name and a region")
        if self.api_workers_per_tenant > self.api_workers:
            raise ValueError(
                f"api_workers_per_tenant: {self.api_workers_per_tenant} is more than "
                f"api_workers ({self.api_workers}): one tenant could hold them all"
            )
        if self.api_workers_per_tenant + self.login_workers_per_tenant > self.api_workers:
            raise ValueError(
                f"login_workers_per_tenant: {self.login_workers_per_tenant} with "
                f"api_workers_per_tenant ({self.api_workers_per_tenant}) is more than "
                f"api_workers ({self.api_workers}): one tenant could hold them all"
            )
        return self

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

    def algorithms(self) -> Algorithms:
        """What the proxy's SSH listeners and connections offer."""
        return Algorithms.configured(self.kex_algos, self.ciphers, self.mac_algos)

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


def _read(path: Path) -> str:
    """The text of the ``-c`` file, or ``ConfigError`` in one line saying what it is instead."""
    source = f"config file {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{source} not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source} is a directory: give the path of jumpgate.yaml") from exc
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read: {exc.strerror or exc}") from exc
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source} is not text (UTF-8): give the path of jumpgate.yaml") from exc
    if "\0" in text:
        raise ConfigError(f"{source} is not text (it holds NUL bytes): give jumpgate.yaml")
    return text


def load(path: Path | None, overrides: dict[str, Any]) -> Config:
    """The file's keys (if any) overlaid by flags that were given (not ``None``)."""
    values: dict[str, Any] = {}
    text, source = None, ""
    if path is not None:
        text, source = _read(path), f"config file {path}"
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
    try:
        config = Config.model_validate({str(k): v for k, v in values.items()})
    except ValidationError as exc:
        raise ConfigError(one_line(exc, Config)) from None
    config._notes = _renamed_notes(values)
    return config


def _renamed_notes(values: dict[str, Any]) -> tuple[str, ...]:
    """A note for each key given under its old name (decision 0026)."""
    notes = [
        f"{old}: renamed {new} (decision 0026); {old} is still read, for now"
        for old, new in RENAMED.items()
        if old in values
    ]
    tokens = values.get("static_tokens")
    if isinstance(tokens, list) and any(isinstance(t, dict) and "roles" in t for t in tokens):
        notes.append(
            "static_tokens: roles renamed system_roles (decision 0026); roles is still read"
        )
    return tuple(notes)

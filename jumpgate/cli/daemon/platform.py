"""Composes the platform in one process: store, master key, control plane, proxy fronts.

With role ``auth`` the edge proxy is handed in-process transports that run the control
plane's Lambda handlers on thread pools (bcrypt and signing must not block the event loop):
one for the public API, one for the proxy's own calls (decision 0018).
A proxy-only process (``services: [proxy]``, ``control_plane.type: lambda``, as on ECS) gets a
Lambda-invoke transport to the platform's functions instead; nothing else changes.

Secrets a proxy fleet shares come from the environment when set there (ECS injects them from
Secrets Manager): ``JUMPGATE_PROXY_HOST_KEY`` (the proxies' SSH host key, OpenSSH format) and
``JUMPGATE_TLS_CERT``/``JUMPGATE_TLS_KEY`` (PEM); otherwise from the data dir.
"""

import asyncio
import errno
import logging
import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

import asyncssh
import boto3
from botocore.exceptions import BotoCoreError, ClientError

from jumpgate.cli.daemon import listeners
from jumpgate.cli.daemon.config import Config
from jumpgate.cli.daemon.diag import DiagServer
from jumpgate.control_plane.audit.base import AuditStore, open_sink
from jumpgate.control_plane.audit.dynamodb import DynamoDBAuditStore
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.handlers.api import Handler, make_handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.recordings.s3 import S3RecordingStore, ensure_bucket
from jumpgate.control_plane.secrets import (
    MasterKey,
    SecretBox,
    load_or_create_master_key,
    master_key_from_secret,
)
from jumpgate.control_plane.store import Store, throttle
from jumpgate.control_plane.store.dynamodb import DynamoDBStore, ensure_table
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.control_plane.tokens import StaticToken
from jumpgate.edge_proxy import tls
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.events import Event, Invoke
from jumpgate.edge_proxy.lambda_invoke import LambdaInvoke
from jumpgate.edge_proxy.limits import LoginGuard, TokenBuckets
from jumpgate.edge_proxy.service import ProxyService
from jumpgate.edge_proxy.tenant_share import TenantShare
from jumpgate.edge_proxy.web import WebFront
from jumpgate.node_agent.agent import Agent
from jumpgate.protocol import ports
from jumpgate.protocol.functions import Function
from jumpgate.protocol.metrics import MetricLine
from jumpgate.protocol.names import join_host_port, split_host_port

logger = logging.getLogger("jumpgate")


def private_data_dir(path: Path) -> None:
    """The data dir, made 0700, or tightened to 0700 (with a log line) when an earlier
    release, a umask or a person left it open: it holds the master key and every tenant's
    state."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(0o700)
        logger.warning(
            "data dir tightened to 0700", extra={"data_dir": str(path), "was": f"{mode:04o}"}
        )


def open_store(config: Config) -> Store:
    """The state store the config names, created if missing."""
    storage = config.storage
    if storage.type == "dynamodb":
        endpoint = storage.endpoint or None
        ensure_table(storage.table_name, storage.region, endpoint)
        return DynamoDBStore(storage.table_name, region=storage.region, host=endpoint)
    path = Path(storage.path) if storage.path else config.data_dir / "state.db"
    return SQLiteStore(path)


HOST_KEY_VARIABLE = "JUMPGATE_PROXY_HOST_KEY"


def proxy_host_key(data_dir: Path) -> asyncssh.SSHKey:
    """The proxy's SSH host key: from the environment (a fleet shares one), else the data
    dir's, made (0600) on first start."""
    shared = os.environ.get(HOST_KEY_VARIABLE, "").strip()
    if shared:
        try:
            return asyncssh.import_private_key(shared)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ValueError(f"{HOST_KEY_VARIABLE} is not an OpenSSH private key: {exc}") from exc
    path = data_dir / "proxy" / "ssh_host_ed25519_key"
    if path.exists():
        return asyncssh.read_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key())
    return key


def open_master_key(config: Config) -> MasterKey:
    """The master key: the Secrets Manager secret ``storage.master_key_secret`` names (as on
    AWS), or the data dir's ``master.key``, made on first start."""
    storage = config.storage
    if not storage.master_key_secret:
        return load_or_create_master_key(config.data_dir / "master.key")
    client = boto3.client(
        "secretsmanager", region_name=storage.region, endpoint_url=storage.endpoint or None
    )
    try:
        value = client.get_secret_value(SecretId=storage.master_key_secret)["SecretString"]
    except (BotoCoreError, ClientError) as exc:
        raise ValueError(f"cannot read secret {storage.master_key_secret}: {exc}") from exc
    return master_key_from_secret(value, storage.master_key_secret)


def open_control_plane(
    config: Config,
    proxy_host_keys: tuple[str, ...] = (),
    *,
    self_signed_web: bool = False,
    web_certificates: tuple[str, ...] = (),
) -> ControlPlane:
    """The control plane over the configured stores and master key; ``self_signed_web``
    when the proxy's HTTPS certificate is self-signed (join commands then say --insecure),
    and ``web_certificates`` its digests, which trust documents name."""
    private_data_dir(config.data_dir)
    master = open_master_key(config)
    settings = Settings(
        public_addr=config.public_addr,
        ssh_public_port=config.port_of("ssh_listen_addr"),
        tunnel_public_port=config.port_of("tunnel_listen_addr"),
        static_tokens=tuple(
            StaticToken(t.tenant, t.token, t.system_roles) for t in config.static_tokens
        ),
        proxy_host_keys=proxy_host_keys,
        self_signed_web_certificate=self_signed_web,
        web_certificate_sha256=web_certificates,
        node_gone_after=config.node_gone_after,
        recording_grace=config.recording_grace,
    )
    return ControlPlane(
        open_store(config),
        SecretBox(master),
        audit=open_audit_store(config),
        recordings=open_recordings(config),
        settings=settings,
        sinks=[open_sink(uri) for uri in config.sink_uris()],
        retention=config.audit_retention,
    )


def open_audit_store(config: Config) -> AuditStore:
    """The audit store: a DynamoDB table (``Config.audit_table``), created if missing, or the
    SQLite file beside the state."""
    table = config.audit_table()
    if table is not None:
        endpoint = config.storage.endpoint or None
        ensure_audit_table(table[0], table[1], endpoint)
        return DynamoDBAuditStore(table[0], region=table[1], host=endpoint)
    path = config.storage.audit_path
    return SQLiteAuditStore(Path(path) if path else config.data_dir / "audit.db")


def open_recordings(config: Config) -> RecordingStore:
    """The recordings store ``audit_sessions_uri`` names (its bucket created if missing), or
    files under the data dir."""
    uri = config.audit_sessions_uri
    if uri.startswith("s3://"):
        ensure_bucket(uri)
        return S3RecordingStore.from_uri(uri)
    if uri.startswith("file://"):
        return LocalRecordingStore(Path(uri.removeprefix("file://")))
    return LocalRecordingStore(config.data_dir / "recordings")


def lower_priority(niceness: int) -> None:
    """Run the calling thread at ``niceness`` (Linux schedules threads one by one): the API
    workers' bcrypt then takes the CPU the event loop and the proxy's own calls leave."""
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError as exc:  # not permitted here: run at the process's priority
        logger.warning("cannot lower the API workers' priority", extra={"reason": str(exc)})


class InProcessTransport:
    """Runs a control-plane handler on a thread pool, as Lambda would run it remotely."""

    def __init__(self, handler: Handler, pool: ThreadPoolExecutor) -> None:
        self._handler = handler
        self._pool = pool

    async def __call__(self, event: Event) -> Event:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._handler, event, None)


class Daemon:
    """The platform (services ``auth,proxy``) in this process; ``run`` serves until a signal.

    A node agent (role ``node``) may run beside it, as ``make up`` does.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stop = asyncio.Event()
        self._agent_task: asyncio.Task[None] | None = None
        self.agent: Agent | None = None
        private_data_dir(config.data_dir)
        host_key = proxy_host_key(config.data_dir)
        web_cert, web_key = tls.proxy_certificate(config.data_dir, config.public_addr)
        self._tls = tls.server_context(web_cert, web_key)
        public = host_key.export_public_key("openssh").decode().strip()
        # Two pools (docs/decisions/0018): the public API's handlers (logins' bcrypt) on one,
        # the proxy's own calls (session and tunnel checks, locate, audit) on the other, so
        # those never queue behind logins; each tenant holds a bounded share of the first.
        self._pool = ThreadPoolExecutor(
            config.api_workers,
            thread_name_prefix="control-plane",
            initializer=lower_priority,
            initargs=(config.api_nice,),
        )
        self._internal_pool = ThreadPoolExecutor(
            config.internal_workers, thread_name_prefix="control-plane-internal"
        )
        self._plane: ControlPlane | None = None
        self._lambda: LambdaInvoke | None = None
        api: Invoke
        internal: Invoke
        if "auth" in config.services:
            self._plane = open_control_plane(
                config,
                (public,),
                self_signed_web=tls.is_self_signed(web_cert),
                web_certificates=tls.self_signed_sha256(web_cert),
            )
            api = InProcessTransport(make_handler(self._plane), self._pool)
            internal = InProcessTransport(make_internal_handler(self._plane), self._internal_pool)
        else:
            names = {Function(f): name for f, name in config.function_names().items()}
            self._lambda = LambdaInvoke(
                names,
                region=config.control_plane.region,
                endpoint=config.control_plane.endpoint or None,
                internal_workers=config.internal_workers,
            )
            api = internal = self._lambda
        self.share = TenantShare(
            api,
            config.public_addr,
            config.api_workers_per_tenant,
            login_per_tenant=config.login_workers_per_tenant,
            queue=config.tenant_queue,
            per_source=config.tenant_queue_per_source,
        )
        control = ControlPlaneClient(internal)
        limits = config.connection_limits.limits()
        self.fronts = ProxyService(
            control,
            proxy_id=str(uuid.uuid4()),
            host_key=host_key,
            public_addr=config.public_addr,
            limits=limits,
            algorithms=config.algorithms(),
        )
        guard = LoginGuard(
            config.public_addr,
            per_source=TokenBuckets(config.login_source_rate, config.login_source_burst),
            per_user=TokenBuckets(config.login_user_rate / 60, config.login_user_burst),
            per_tenant=TokenBuckets(config.login_tenant_rate, config.login_tenant_burst),
            anonymous=TokenBuckets(config.anonymous_source_rate, config.anonymous_source_burst),
            record=self.fronts.audit.record,
        )
        self.web = WebFront(
            self.share,
            guard=guard,
            limits=limits,
            refused=self.fronts.metrics.connections_refused,
        )
        self.ready = asyncio.Event()
        self.web_port = 0
        self.ssh_port = 0
        self.tunnel_port = 0

    @property
    def plane(self) -> ControlPlane:
        """The control plane this process runs (role ``auth``)."""
        if self._plane is None:
            raise RuntimeError("this process runs no control plane (no role auth)")
        return self._plane

    def _ready(self) -> bool:
        """Listeners up, and the in-process agent's tunnel too when there is one."""
        return self.ready.is_set() and (self.agent is None or self.agent.tunnel_up.is_set())

    def _metrics(self) -> list[MetricLine]:
        lines = self.fronts.metrics.lines(len(self.fronts.registry))
        lines += [
            ("jumpgate_store_throttled_total", "counter", {"table": table}, float(count))
            for table, count in sorted(throttle.counts.items())
        ]
        return lines + (self.agent.metric_lines() if self.agent is not None else [])

    async def _start_diag(self) -> DiagServer | None:
        if not self.config.diag_addr:
            return None
        host, port = split_host_port(self.config.diag_addr, 0, listen=True)
        diag = DiagServer(self._ready, self._metrics)
        bound = await diag.start(host, port)
        logger.info("diagnostics", extra={"diag_addr": join_host_port(host, bound)})
        return diag

    async def _sweep_recordings(self) -> None:
        """Complete recordings whose node went quiet for longer than the grace period."""
        period = min(60.0, self.plane.recordings.grace.total_seconds() / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            try:
                done = await loop.run_in_executor(self._internal_pool, self.plane.recordings.sweep)
            except Exception:
                logger.exception("recording sweep failed")
                continue
            for tenant, session_id in done:
                logger.info(
                    "recording completed by the platform",
                    extra={"tenant": tenant, "session_id": session_id},
                )

    def start_agent(self, agent: Agent) -> None:
        """Run a node agent beside the platform; it stops first when the platform stops."""
        self.agent = agent
        self._agent_task = asyncio.create_task(agent.run(self._stop))

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or self._stop
        self._stop = stop
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        config = self.config
        web = split_host_port(config.web_listen_addr, 0, listen=True)
        ssh = split_host_port(config.ssh_listen_addr, 0, listen=True)
        tunnel = split_host_port(config.tunnel_listen_addr, 0, listen=True)
        try:
            bound = await self.web.start(web[0], web[1], self._tls)
            peer = (
                split_host_port(config.peer_listen_addr, ports.PEER, listen=True)
                if config.peer_listen_addr
                else None
            )
            self.ssh_port, self.tunnel_port = await self.fronts.start(
                user=ssh, tunnel=tunnel, peer=peer, peer_public_addr=config.peer_public_addr
            )
        except OSError as exc:
            await self._let_go()
            # ``listeners.check`` tried each address a moment ago: this is a race, said alike
            busy = exc.errno == errno.EADDRINUSE
            raise OSError(
                f"cannot listen ({exc.strerror}): "
                + ("stop what uses the port or choose other " if busy else "check ")
                + "--web-listen-addr/--ssh-listen-addr/--tunnel-listen-addr/peer_listen_addr"
            ) from exc
        except (ControlPlaneError, ValueError) as exc:  # peering: no certificates, no address
            await self._let_go()
            raise OSError(f"cannot start proxy peering: {exc}") from exc
        self.web_port = bound
        self._announce_bound_ports()
        try:  # bound before "platform started", as every other listener
            diag = await self._start_diag()
        except OSError as exc:
            await self._let_go()
            raise OSError(listeners.why("diag_addr", config.diag_addr, exc)) from exc
        logger.info(
            "platform started",
            extra={
                "web_listen_addr": join_host_port(web[0], bound),
                "ssh_listen_addr": join_host_port(ssh[0], self.ssh_port),
                "tunnel_listen_addr": join_host_port(tunnel[0], self.tunnel_port),
                "public_addr": config.public_addr,
                "data_dir": str(config.data_dir),
            },
        )
        if self.fronts.peering is not None:
            logger.info(
                "peering",
                extra={"proxy_id": self.fronts.proxy_id, "peer_addr": self.fronts.peering.addr},
            )
        sweeper = asyncio.create_task(self._sweep_recordings()) if self._plane else None
        self.ready.set()
        try:
            await stop.wait()
        finally:
            logger.info("shutting down")
            self.share.close()  # calls queued behind a tenant's share end now
            if sweeper is not None:
                sweeper.cancel()
            if diag is not None:
                await diag.close()
            if self._agent_task is not None:
                results = await asyncio.gather(self._agent_task, return_exceptions=True)
                if isinstance(results[0], Exception):
                    logger.error("node agent stopped: %s", results[0])
            # sessions end and their audit is sent while the control plane is still here
            await self._let_go(config.drain_timeout.total_seconds())
            logger.info("stopped")

    def _announce_bound_ports(self) -> None:
        """Ports the system picked (a listen address with port 0) are the ones users and
        nodes are told: the control plane's settings named 0 until now."""
        if self._plane is None:
            return
        settings = self._plane.settings
        ssh = settings.ssh_public_port or self.ssh_port
        tunnel = settings.tunnel_public_port or self.tunnel_port
        if (ssh, tunnel) != (settings.ssh_public_port, settings.tunnel_public_port):
            self._plane.settings = replace(settings, ssh_public_port=ssh, tunnel_public_port=tunnel)

    async def _let_go(self, drain: float = 0.0) -> None:
        """Close what ``__init__`` opened and ``run`` bound, in order: the fronts (their
        sessions drained for ``drain`` seconds), the web front, the pools, the store; also
        when ``run`` fails before it started."""
        self.share.close()
        await self.fronts.close(drain)
        await self.web.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._internal_pool.shutdown(wait=True, cancel_futures=True)
        if self._plane is not None:
            self._plane.store.close()
            self._plane.audit.close()
        if self._lambda is not None:
            self._lambda.close()

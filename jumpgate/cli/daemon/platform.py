"""Composes the platform in one process: store, master key, control plane, HTTPS front.

The edge proxy is handed an in-process transport that runs the control plane's Lambda
handler on a thread pool (bcrypt and signing must not block the event loop); on AWS the
same proxy gets a Lambda-invoke transport instead.
"""

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from jumpgate.cli.daemon.config import Config
from jumpgate.control_plane.handlers.api import Handler, make_handler
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.secrets import SecretBox, load_or_create_master_key
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.store.dynamodb import DynamoDBStore, ensure_table
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.control_plane.tokens import StaticToken
from jumpgate.edge_proxy import tls
from jumpgate.edge_proxy.events import Event
from jumpgate.edge_proxy.web import WebFront
from jumpgate.protocol.names import split_host_port

logger = logging.getLogger("jumpgate")


def open_store(config: Config) -> Store:
    """The state store the config names, created if missing."""
    storage = config.storage
    if storage.type == "dynamodb":
        endpoint = storage.endpoint or None
        ensure_table(storage.table_name, storage.region, endpoint)
        return DynamoDBStore(storage.table_name, region=storage.region, host=endpoint)
    path = Path(storage.path) if storage.path else config.data_dir / "state.db"
    return SQLiteStore(path)


def open_control_plane(config: Config) -> ControlPlane:
    """The control plane over the configured store and the data dir's master key."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    master = load_or_create_master_key(config.data_dir / "master.key")
    settings = Settings(
        public_addr=config.public_addr,
        ssh_public_port=config.port_of("ssh_listen_addr"),
        tunnel_public_port=config.port_of("tunnel_listen_addr"),
        static_tokens=tuple(StaticToken(t.tenant, t.token, t.roles) for t in config.static_tokens),
    )
    return ControlPlane(open_store(config), SecretBox(master), settings=settings)


class InProcessTransport:
    """Runs the control-plane handler on a thread pool, as Lambda would run it remotely."""

    def __init__(self, handler: Handler, *, workers: int = 8) -> None:
        self._handler = handler
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="control-plane")

    async def __call__(self, event: Event) -> Event:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._handler, event, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Daemon:
    """The running platform; ``run`` serves until SIGINT/SIGTERM."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.plane = open_control_plane(config)
        self._transport = InProcessTransport(make_handler(self.plane))
        self.web = WebFront(self._transport)
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        cert, key = tls.ensure_certificate(self.config.data_dir / "tls", self.config.public_addr)
        host, port = split_host_port(self.config.web_listen_addr, 0, listen=True)
        try:
            bound = await self.web.start(host, port, tls.server_context(cert, key))
        except OSError as exc:
            raise OSError(
                f"cannot listen on {self.config.web_listen_addr} ({exc.strerror}): "
                "stop what uses it or pass --web-listen-addr"
            ) from exc
        logger.info(
            "platform started",
            extra={
                "web_listen_addr": f"{host}:{bound}",
                "public_addr": self.config.public_addr,
                "data_dir": str(self.config.data_dir),
                "roles": ",".join(self.config.roles),
            },
        )
        self.ready.set()
        try:
            await stop.wait()
        finally:
            logger.info("shutting down")
            await self.web.stop()
            self._transport.close()
            self.plane.store.close()
            logger.info("stopped")

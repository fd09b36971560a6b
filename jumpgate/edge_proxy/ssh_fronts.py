"""The proxy's SSH listeners: the tunnel front for node agents, the user front for people.

Tunnel front (3024): an agent logs in as ``<host_id>.<tenant>`` with the host key it joined
with (the control plane checks it), asks to listen on its SSH port, and keeps the connection
open; that request registers the tunnel. Its heartbeats arrive on a ``jumpgate-heartbeat``
subsystem; presence is written only when it changes.

User front (3023): users log in with their certificate; its CA tells the tenant (SSH sees no
hostname). A ``direct-tcpip`` channel to ``NODE:22`` (or 3022) is spliced onto a channel the
proxy opens through the node's tunnel, so ``ssh -J`` works and the user's SSH session stays
end to end with the node: the proxy forwards bytes and never holds session keys.
"""

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.registry import AmbiguousNode, Tunnel, TunnelRegistry, UnknownNode
from jumpgate.edge_proxy.splice import splice
from jumpgate.protocol import models
from jumpgate.protocol.metrics import MetricLine

logger = logging.getLogger(__name__)

NODE_SSH_PORTS = (22, 3022)
HEARTBEAT_SUBSYSTEM = "jumpgate-heartbeat"
RENEW_SUBSYSTEM = "jumpgate-renew"
PROXY_BEAT_SECONDS = 60.0
MAX_HEARTBEAT_BYTES = 16 * 1024

Relay = Callable[[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]], Awaitable[None]]


@dataclass
class Metrics:
    """Counters for ``/metrics``."""

    sessions: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)

    def lines(self, tunnels: int) -> list[MetricLine]:
        """Samples for ``/metrics``."""
        out: list[MetricLine] = [
            ("jumpgate_proxy_tunnels", "gauge", {}, float(tunnels)),
            ("jumpgate_proxy_sessions_total", "counter", {}, float(self.sessions)),
            (
                "jumpgate_proxy_bytes_total",
                "counter",
                {"direction": "to_node"},
                float(self.bytes_in),
            ),
            (
                "jumpgate_proxy_bytes_total",
                "counter",
                {"direction": "to_user"},
                float(self.bytes_out),
            ),
        ]
        for reason, count in sorted(self.handshake_failures.items()):
            out.append(
                (
                    "jumpgate_proxy_handshake_failures_total",
                    "counter",
                    {"reason": reason},
                    float(count),
                )
            )
        return out


def _target(text: str) -> tuple[str, int]:
    """``NODE`` or ``NODE:PORT`` of a proxy subsystem; only a node's SSH port is reachable."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "22"
    if not host or not port.isdigit():
        raise ValueError(f"proxy subsystem target {text!r} is not NODE or NODE:PORT")
    if int(port) not in NODE_SSH_PORTS:
        raise ValueError(f"only a node's SSH port (22 or 3022) can be reached, not {port}")
    return host, int(port)


def _openssh(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


class _TunnelServer(asyncssh.SSHServer):
    """One agent's tunnel connection."""

    def __init__(self, fronts: "SSHFronts") -> None:
        self._fronts = fronts
        self._conn: asyncssh.SSHServerConnection | None = None
        self.node: models.TunnelNode | None = None
        self.tunnel: Tunnel | None = None
        self._key = ""
        self.reported: models.Presence | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        host_id, _, tenant = username.partition(".")
        self._key = _openssh(key)
        try:
            self.node = await self._fronts.control.tunnel_auth(tenant, host_id, self._key)
        except ControlPlaneError as exc:
            self._fronts.metrics.handshake_failures["tunnel_refused"] += 1
            logger.info("tunnel refused", extra={"node": username, "reason": str(exc)})
            return False
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> asyncssh.SSHListener | bool:
        if self.node is None or self._conn is None or self.tunnel is not None:
            return False
        self.tunnel = Tunnel(
            self.node.tenant,
            self.node.host_id,
            self.node.nodename,
            self._conn,
            listen_host,
            listen_port,
            self._key,
        )
        replaced = self._fronts.registry.add(self.tunnel)
        if replaced is not None:
            replaced.connection.close()
        logger.info("tunnel up", extra={"tenant": self.node.tenant, "node": self.node.host_id})
        return _TunnelListener(listen_port)

    def connection_lost(self, exc: Exception | None) -> None:
        tunnel = self.tunnel
        if tunnel is not None and self._fronts.registry.remove(tunnel):
            logger.info("tunnel down", extra={"tenant": tunnel.tenant, "node": tunnel.host_id})
            down = models.Presence(tenant=tunnel.tenant, host_id=tunnel.host_id, proxy=None)
            self._fronts.spawn(self._fronts.control.presence(down))

    async def heartbeat(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Read JSON heartbeats; report presence when what the node says changes."""
        node = self.node
        if node is None or self.tunnel is None:
            process.exit(1)
            return
        async for line in process.stdin:
            if len(line) > MAX_HEARTBEAT_BYTES:
                break
            try:
                beat = json.loads(line)
                presence = models.Presence(
                    tenant=node.tenant,
                    host_id=node.host_id,
                    proxy=self._fronts.proxy_id,
                    hostname=str(beat.get("hostname", ""))[:253],
                    addr=str(beat.get("addr", ""))[:64],
                    version=str(beat.get("version", ""))[:64],
                    labels={
                        str(k)[:63]: str(v)[:255] for k, v in dict(beat.get("labels", {})).items()
                    },
                )
            except (ValueError, TypeError, AttributeError):
                logger.info("bad heartbeat ignored", extra={"node": node.host_id})
                continue
            if presence != self.reported:
                try:
                    await self._fronts.control.presence(presence)
                except ControlPlaneError as exc:
                    logger.warning(
                        "presence not recorded", extra={"node": node.host_id, "reason": str(exc)}
                    )
                    break
                self.reported = presence
        process.exit(0)

    async def renew(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Hand the node a fresh host certificate for the key it authenticated with."""
        node = self.node
        if node is None:
            process.exit(1)
            return
        try:
            certificate = await self._fronts.control.renew_host_cert(node.tenant, node.host_id)
        except ControlPlaneError as exc:
            process.stderr.write(f"renewal refused: {exc}\n")
            process.exit(1)
            return
        process.stdout.write(certificate + "\n")
        process.exit(0)


class _TunnelListener(asyncssh.SSHListener):
    """What ``server_requested`` returns: the tunnel itself is the listener."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def get_port(self) -> int:
        return self._port


class _UserServer(asyncssh.SSHServer):
    """One user's connection to the proxy."""

    def __init__(self, fronts: "SSHFronts") -> None:
        self._fronts = fronts
        self.tenant: str | None = None

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        tenant = await self._fronts.control.tenant_by_user_ca(_openssh(key))
        if tenant is None:
            self._fronts.metrics.handshake_failures["unknown_user_ca"] += 1
            return False
        self.tenant = tenant
        return True

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> "Relay":
        if self.tenant is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "not authenticated"
            )
        if dest_port not in NODE_SSH_PORTS:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"only a node's SSH port (22 or 3022) can be reached, not {dest_port}",
            )
        try:
            tunnel = self._fronts.find(self.tenant, dest_host)
        except (UnknownNode, AmbiguousNode) as exc:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        return self._fronts.relay(tunnel)


class SSHFronts:
    """Both SSH listeners of one proxy, sharing the tunnel registry."""

    def __init__(
        self,
        control: ControlPlaneClient,
        *,
        proxy_id: str,
        host_key: asyncssh.SSHKey,
        public_addr: str,
    ) -> None:
        self.control = control
        self.proxy_id = proxy_id
        self.public_addr = public_addr
        self.registry = TunnelRegistry()
        self.metrics = Metrics()
        self._host_key = host_key
        self._servers: list[asyncssh.SSHAcceptor] = []
        self._tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None:
        """Run a background call; log, never raise, if it fails."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[object]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background control-plane call failed", exc_info=task.exception())

    def find(self, tenant: str, name: str) -> Tunnel:
        """A live node by name, uuid, ``uuid.tenant`` or ``name.tenant.<public-addr>``."""
        suffix = f".{tenant}.{self.public_addr}"
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
        return self.registry.find(tenant, name)

    def relay(self, tunnel: Tunnel) -> "Relay":
        """A channel handler splicing the user's channel onto a new one through the tunnel."""

        async def handle(
            reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
        ) -> None:
            try:
                # A node removed since its tunnel came up is dropped, not reached.
                await self.control.tunnel_auth(tunnel.tenant, tunnel.host_id, tunnel.public_key)
            except ControlPlaneError as exc:
                logger.info("node removed: its tunnel is closed", extra={"reason": str(exc)})
                tunnel.connection.close()
                writer.close()
                return
            try:
                node = await tunnel.connection.open_connection(
                    tunnel.listen_host, tunnel.listen_port
                )
            except (asyncssh.Error, OSError) as exc:
                logger.info(
                    "node channel refused", extra={"node": tunnel.host_id, "reason": str(exc)}
                )
                writer.close()
                return
            self.metrics.sessions += 1
            sent, received = await splice((reader, writer), node)
            self.metrics.bytes_in += sent
            self.metrics.bytes_out += received

        return handle

    async def _tunnel_process(self, process: asyncssh.SSHServerProcess[str]) -> None:
        owner = process.channel.get_connection().get_owner()
        if isinstance(owner, _TunnelServer) and process.subsystem == HEARTBEAT_SUBSYSTEM:
            await owner.heartbeat(process)
        elif isinstance(owner, _TunnelServer) and process.subsystem == RENEW_SUBSYSTEM:
            await owner.renew(process)
        else:
            process.stderr.write("only the jumpgate-heartbeat and -renew subsystems are served\n")
            process.exit(1)

    async def _user_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """The ``proxy:NODE[:PORT]`` subsystem: the session channel becomes the node's stream."""
        owner = process.channel.get_connection().get_owner()
        subsystem = process.subsystem or ""
        try:
            if not isinstance(owner, _UserServer) or owner.tenant is None:
                raise UnknownNode("not authenticated")
            if not subsystem.startswith("proxy:"):
                raise UnknownNode(
                    "this proxy serves direct-tcpip (ssh -J) and the proxy:NODE:PORT subsystem, "
                    "not shells: see jump ssh"
                )
            host, _port = _target(subsystem.removeprefix("proxy:"))
            tunnel = self.find(owner.tenant, host)
        except (UnknownNode, AmbiguousNode, ValueError) as exc:
            process.stderr.write(f"jumpgate proxy: {exc}\n".encode())
            process.exit(1)
            return
        await self.relay(tunnel)(process.stdin, process.stdout)
        with contextlib.suppress(Exception):
            process.exit(0)

    async def start(self, *, user: tuple[str, int], tunnel: tuple[str, int]) -> tuple[int, int]:
        """Listen for users and for tunnels; the bound ports (0 picks free ones)."""
        common = {
            "server_host_keys": [self._host_key],
            "keepalive_interval": 30,
            "keepalive_count_max": 3,
        }
        user_server = await asyncssh.listen(
            user[0],
            user[1],
            server_factory=lambda: _UserServer(self),
            process_factory=self._user_process,
            encoding=None,
            **common,
        )
        tunnel_server = await asyncssh.listen(
            tunnel[0],
            tunnel[1],
            server_factory=lambda: _TunnelServer(self),
            process_factory=self._tunnel_process,
            encoding="utf-8",
            **common,
        )
        self._servers = [user_server, tunnel_server]
        self.spawn(self._beat(), name="proxy-beat")
        return user_server.sockets[0].getsockname()[1], tunnel_server.sockets[0].getsockname()[1]

    async def _beat(self) -> None:
        while True:
            try:
                await self.control.proxy_alive(self.proxy_id)
            except ControlPlaneError as exc:
                logger.warning("proxy liveness not recorded", extra={"reason": str(exc)})
            await asyncio.sleep(PROXY_BEAT_SECONDS)

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, close every tunnel (its node goes offline), wait for those writes."""
        for server in self._servers:
            server.close()
        for tunnel in self.registry.all():
            tunnel.connection.close()
        for server in self._servers:
            await server.wait_closed()
        beats = [t for t in self._tasks if t.get_name() == "proxy-beat"]
        for task in beats:
            task.cancel()
        pending = [t for t in self._tasks if t not in beats]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

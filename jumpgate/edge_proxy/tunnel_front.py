"""The proxy's tunnel front (3024): the connections node agents keep open to it.

An agent logs in as ``<host_id>.<tenant>`` with the host key it joined with (the control
plane checks it), asks to listen on its SSH port, and keeps the connection open; that request
registers the tunnel, and a second one on ``ports.DIALBACK`` lets the agent dial back for
sessions. On the same connection the node holds its control channel (``tunnel_control``:
hello, heartbeats, audit, renewals, trust pushed to it) and streams its recordings. Everything
else a node asks is bounded per node, per connection and per source (``node_budget``): a
node's key must not slow other tenants.
"""

import logging
from collections.abc import Coroutine
from typing import Any, Protocol

import asyncssh
from asyncssh.stream import SSHTCPStreamSession

from jumpgate.edge_proxy import audit_intake, recordings, tunnel_legacy
from jumpgate.edge_proxy.connections import ChannelSlots, LogThrottle, source_key
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_budget import NodeBudget, NodeBudgets
from jumpgate.edge_proxy.node_policy import NodePolicies
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.edge_proxy.tunnel_control import ControlSession
from jumpgate.protocol import models, ports
from jumpgate.protocol.channel_window import bound_receive_window
from jumpgate.protocol.kex_memory import drop_kexinits
from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM, LISTEN_HOST

logger = logging.getLogger(__name__)


class TunnelHost(Protocol):
    """What a tunnel connection needs of the proxy holding it (``ssh_fronts.SSHFronts``)."""

    control: ControlPlaneClient
    proxy_id: str
    registry: TunnelRegistry
    metrics: Metrics
    recording_settings: recordings.SettingsCache
    audit_budget: audit_intake.AuditBudget
    audit_intakes: dict[tuple[str, str], audit_intake.TunnelAudit]  # per node
    nodes: NodeBudgets  # what each node, connection and source may ask (``node_budget``)
    policies: NodePolicies  # each tenant's locks and roles revision, pushed to its nodes

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None: ...


def openssh_key(key: asyncssh.SSHKey) -> str:
    return key.export_public_key("openssh").decode().strip()


class TunnelServer(asyncssh.SSHServer):
    """One agent's tunnel connection."""

    def __init__(self, fronts: TunnelHost) -> None:
        self._fronts = fronts
        self._conn: asyncssh.SSHServerConnection | None = None
        self.node: models.TunnelNode | None = None
        self.tunnel: Tunnel | None = None
        self._key = ""
        self._source = ""
        self._counted = False  # counted in its node's ``connections``
        self.control_open = False  # its control channel is being served
        self.channels = ChannelSlots("channels", fronts.nodes.limits.channels_per_connection)

    @property
    def host(self) -> TunnelHost:
        return self._fronts

    @property
    def intake(self) -> audit_intake.TunnelAudit:
        """The node's audit budget: one per node, however many connections it opens."""
        assert self.node is not None
        key = (self.node.tenant, self.node.host_id)
        intakes = self._fronts.audit_intakes
        if key not in intakes:
            intakes[key] = audit_intake.TunnelAudit(self._fronts.audit_budget)
        return intakes[key]

    @property
    def budget(self) -> NodeBudget:
        """The node's budget, over all its connections."""
        assert self.node is not None
        return self._fronts.nodes.of(self.node.tenant, self.node.host_id)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._source = source_key(conn.get_extra_info("peername"))

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Ask the control plane, unless this source has had too many refused: each refusal
        costs it a token (``node_budget``), a success gives it back."""
        nodes = self._fronts.nodes
        if nodes.auth_failures.take(self._source):
            self._refused(nodes.refusals, username, "too many refused tunnel logins from here")
            self._fronts.metrics.handshake_failures["tunnel_throttled"] += 1
            return False
        host_id, _, tenant = username.partition(".")
        self._key = openssh_key(key)
        try:
            node = await self._fronts.control.tunnel_auth(tenant, host_id, self._key)
        except ControlPlaneError as exc:
            self._fronts.metrics.handshake_failures["tunnel_refused"] += 1
            if exc.status >= 500 or exc.status == 0:  # the platform's fault, not the source's
                nodes.auth_failures.give_back(self._source)
            self._refused(nodes.refusals, username, str(exc))
            return False
        nodes.auth_failures.give_back(self._source)
        if nodes.of(node.tenant, node.host_id).connections >= nodes.limits.connections_per_node:
            self._fronts.metrics.handshake_failures["tunnel_connections"] += 1
            limit = nodes.limits.connections_per_node
            self._refused(nodes.refusals, username, f"at most {limit} connections per node")
            return False
        self.node = node
        return True

    def _refused(self, throttle: LogThrottle, username: str, reason: str) -> None:
        """One "tunnel refused" line a second at most, counting the ones it does not log."""
        unlogged = throttle.due()
        if unlogged is not None:
            logger.info(
                "tunnel refused",
                extra={
                    "node": username[:128],
                    "source": self._source,
                    "reason": reason[:300],
                    "refused_unlogged": unlogged,
                },
            )

    def auth_completed(self) -> None:
        if self._conn is not None:
            drop_kexinits(self._conn)  # 3.7 KiB per idle tunnel (set again at a rekey)
        if self.node is not None and not self._counted:
            self._counted = True
            self.budget.connections += 1

    def session_requested(self) -> "NodeSession":
        """A session channel (the control channel) holds one of the connection's channel
        slots from when it is opened, whether or not it ever asks for a subsystem, until it
        closes; none free: the open fails saying so."""
        self.channels.claim()
        return NodeSession(self)

    def server_requested(self, listen_host: str, listen_port: int) -> asyncssh.SSHListener | bool:
        if self.node is None or self._conn is None:
            return False
        if self.tunnel is not None:
            if listen_port != ports.DIALBACK or self.tunnel.dialback:
                return False
            self.tunnel.dialback = True
            return TunnelListener(listen_port)
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
        return TunnelListener(listen_port)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        """The one channel a node may open: its recordings, to ``ports.RECORDINGS``."""
        node, conn = self.node, self._conn
        if (
            node is None
            or conn is None
            or (dest_host, dest_port)
            != (
                LISTEN_HOST,
                ports.RECORDINGS,
            )
        ):
            return False
        control, settings = self._fronts.control, self._fronts.recording_settings
        give_back = self.channels.take()  # raises the open failure the node is shown

        async def handle(
            reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
        ) -> None:
            try:
                await recordings.serve(control, settings, node, reader, writer)
            finally:
                give_back()

        return conn.create_tcp_channel(encoding=None), SSHTCPStreamSession(handle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self.budget.connections -= 1
        tunnel = self.tunnel
        if tunnel is not None and self._fronts.registry.remove(tunnel):
            logger.info("tunnel down", extra={"tenant": tunnel.tenant, "node": tunnel.host_id})
            self.budget.gone()
            down = models.Presence(tenant=tunnel.tenant, host_id=tunnel.host_id, proxy=None)
            self._fronts.spawn(self._fronts.control.presence(down))


class TunnelListener(asyncssh.SSHListener):
    """What ``server_requested`` returns: the tunnel itself is the listener."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def get_port(self) -> int:
        return self._port


class NodeSession(asyncssh.SSHServerSession[str]):
    """A session channel a node opens on its tunnel. The control channel, held open for the
    tunnel's life, is served by callbacks (``ControlSession``: an idle one holds no task and
    no reader); anything else (the short-lived subsystems of older agents, a busy control
    channel, what is not served) by an asyncssh process running ``serve_subsystem``."""

    def __init__(self, server: TunnelServer) -> None:
        self._server = server  # holds one of its channel slots until ``connection_lost``
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._inner: asyncssh.SSHServerSession[str] | None = None

    def _process(self) -> asyncssh.SSHServerSession[str]:
        process: asyncssh.SSHServerProcess[str] = asyncssh.SSHServerProcess(
            serve_subsystem, None, 0, False
        )
        process.connection_made(self._chan)  # type: ignore[arg-type]
        self._inner = process
        return process

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan

    def shell_requested(self) -> bool:
        return self._process().shell_requested()

    def exec_requested(self, command: str) -> bool:
        return self._process().exec_requested(command)

    def subsystem_requested(self, subsystem: str) -> bool:
        server = self._server
        if subsystem != CONTROL_SUBSYSTEM or server.control_open:
            return self._process().subsystem_requested(subsystem)
        server.control_open = True
        control = ControlSession(server)
        control.connection_made(self._chan)  # type: ignore[arg-type]
        self._inner = control
        return True

    def session_started(self) -> None:
        if self._inner is not None:
            self._inner.session_started()

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        if self._inner is not None:
            self._inner.data_received(data, datatype)

    def eof_received(self) -> bool:
        return self._inner is not None and self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def break_received(self, msec: int) -> bool:
        return self._inner is not None and self._inner.break_received(msec)

    def signal_received(self, signal: str) -> None:
        if self._inner is not None:
            self._inner.signal_received(signal)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self._inner is not None:
            self._inner.terminal_size_changed(width, height, pixwidth, pixheight)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.channels.release()
        if self._inner is not None:
            self._inner.connection_lost(exc)


async def serve_subsystem(process: asyncssh.SSHServerProcess[str]) -> None:
    """A node's subsystem request on its tunnel, other than its first control channel: one
    of the subsystems of agents older than it (``tunnel_legacy``), or refused saying why."""
    owner = process.channel.get_connection().get_owner()
    subsystem = process.subsystem or ""
    legacy = subsystem in tunnel_legacy.SUBSYSTEMS
    if not isinstance(owner, TunnelServer) or not (legacy or subsystem == CONTROL_SUBSYSTEM):
        process.stderr.write(f"only the {CONTROL_SUBSYSTEM} subsystem is served\n")
        process.exit(1)
        return
    if legacy and subsystem != tunnel_legacy.HEARTBEAT_SUBSYSTEM:
        bound_receive_window(process.channel)  # the audit waits for its budget (0019)
        process.exit(await tunnel_legacy.serve(owner, process))
        return
    if owner.control_open or not legacy:  # a control channel comes here only when busy
        process.stderr.write("one control channel per tunnel: close the other\n")
        process.exit(tunnel_legacy.TEMPFAIL if legacy else 1)
        return
    owner.control_open = True
    try:
        bound_receive_window(process.channel)
        status = await tunnel_legacy.serve(owner, process)
    finally:
        owner.control_open = False
    process.exit(status)

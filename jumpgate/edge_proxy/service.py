"""The proxy's SSH service: its listeners, its parts and its background tasks, and how it stops.

It composes the rest: the user front (``user_front``) and the tunnel front (``tunnel_front``)
on listeners built from sockets (``listeners``: a successor process could be handed them),
the session broker (``broker``) that both kinds of session go through, the node link
(``node_link``: dial-back, tunnel channel, peer relay), the tunnel registry, the audit outbox
(``proxy_audit``) and its metrics. Its long-lived tasks run in one TaskGroup
(``supervisor``). ``close`` drains: sessions end with their audit, then the tunnels, then
the audit outbox is flushed.
"""

import asyncio
import logging
import socket
import weakref
from collections.abc import Coroutine
from typing import Any

import asyncssh

from jumpgate.edge_proxy import audit_intake, listeners, recordings
from jumpgate.edge_proxy.broker import SessionBroker
from jumpgate.edge_proxy.connections import ConnectionLimits, SourceGate, gated
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.dialback import DialBack
from jumpgate.edge_proxy.lock_watch import LockWatch
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_budget import NodeBudgets, TunnelLimits
from jumpgate.edge_proxy.node_link import NodeLink
from jumpgate.edge_proxy.node_policy import NodePolicies
from jumpgate.edge_proxy.peering import Peering
from jumpgate.edge_proxy.proxy_audit import AuditOutbox
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.edge_proxy.splice import Splice
from jumpgate.edge_proxy.supervisor import Supervisor
from jumpgate.edge_proxy.tunnel_front import TunnelServer
from jumpgate.edge_proxy.user_front import UserFront
from jumpgate.protocol.ssh_algorithms import Algorithms

logger = logging.getLogger(__name__)

PROXY_BEAT_SECONDS = 60.0
DRAIN_SECONDS = 10.0
"""How long a stopping proxy gives its live sessions, and their audit, to end."""
FLUSH_RESERVE = 2.0
"""Of the drain, what is kept for sending the audit outbox once the sessions have ended."""
REMOVAL_POLL_SECONDS = 2.0
"""How often a proxy holding tunnels asks which nodes were removed (closed within 5 s)."""
NODE_REPORT_GRACE = 1.0
"""After ending sessions, how long tunnels stay open for the nodes to report their ends."""


class ProxyService:
    """Both SSH listeners of one proxy (users, tunnels), and peering when asked for.

    It is also the ``tunnel_front.TunnelHost`` its tunnel connections share."""

    def __init__(
        self,
        control: ControlPlaneClient,
        *,
        proxy_id: str,
        host_key: asyncssh.SSHKey,
        public_addr: str,
        limits: ConnectionLimits | None = None,
        audit_budget: audit_intake.AuditBudget | None = None,
        tunnel_limits: TunnelLimits | None = None,
        algorithms: Algorithms | None = None,
    ) -> None:
        self.control = control
        self.algorithms = algorithms or Algorithms()  # offered on every listener (0030)
        self.proxy_id = proxy_id
        self.public_addr = public_addr
        self.audit_budget = audit_budget or audit_intake.AuditBudget()
        self.audit_intakes: dict[tuple[str, str], audit_intake.TunnelAudit] = {}  # per node
        self.nodes = NodeBudgets(tunnel_limits)
        self.registry = TunnelRegistry()
        self.metrics = Metrics()
        self.audit = AuditOutbox(control)
        self.recording_settings = recordings.SettingsCache(control)
        self.limits = limits or ConnectionLimits()
        self.dialback = DialBack(self.limits, self.metrics.connections_refused)
        self.link = NodeLink(self.registry, self.dialback, self.metrics, proxy_id)
        self.broker: SessionBroker[Tunnel, Splice] = SessionBroker(
            control,
            self.registry,
            self.link,
            self.audit,
            proxy_id=proxy_id,
            public_addr=public_addr,
            metrics=self.metrics,
        )
        self.tasks = Supervisor()
        self.policies = NodePolicies(control)
        self.lock_watch: LockWatch[Splice] = LockWatch(
            control, self.broker, self.policies, self.tasks.spawn
        )
        self.users: weakref.WeakSet[asyncssh.SSHServerConnection] = weakref.WeakSet()
        self.user_front = UserFront(
            self.broker, control, self.metrics, self.limits, self.tasks.spawn, self.users
        )
        self._host_key = host_key
        self._servers: list[asyncssh.SSHAcceptor] = []

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None:
        """Run a short background call under the service's supervision."""
        self.tasks.spawn(coroutine, name)

    @property
    def peering(self) -> Peering | None:
        """This proxy's peer listener and connections, when it peers."""
        return self.link.peers

    async def start(
        self,
        *,
        user: tuple[str, int],
        tunnel: tuple[str, int],
        peer: tuple[str, int] | None = None,
        peer_public_addr: str = "",
    ) -> tuple[int, int]:
        """Bind the user and tunnel addresses and serve them (``serve``); the bound ports
        (0 picks free ones)."""
        user_socks = listeners.bind(*user)
        try:
            tunnel_socks = listeners.bind(*tunnel)
        except OSError:
            for sock in user_socks:
                sock.close()
            raise
        await self.serve(
            users=user_socks,
            tunnels=tunnel_socks,
            peer=peer,
            peer_public_addr=peer_public_addr,
        )
        return user_socks[0].getsockname()[1], tunnel_socks[0].getsockname()[1]

    async def serve(
        self,
        *,
        users: list[socket.socket],
        tunnels: list[socket.socket],
        peer: tuple[str, int] | None = None,
        peer_public_addr: str = "",
    ) -> None:
        """Listen for users and tunnels on sockets already bound (this process's, or handed
        down by a predecessor), and (with ``peer``) for other proxies."""
        await self.tasks.start()
        if peer is not None:
            self.link.peers = Peering(
                self.control, self.proxy_id, self.link.serve_peer, self.algorithms
            )
            await self.link.peers.start(peer, peer_public_addr)
            self.tasks.loop(self.link.peers.renew_forever(), "peer-renew")
        common = {
            "server_host_keys": [self._host_key],
            "keepalive_interval": 30,
            "keepalive_count_max": 3,
            "login_timeout": self.limits.login_grace,
            **self.algorithms.server(),
        }
        refused = self.metrics.connections_refused
        user_gate = SourceGate("ssh", self.limits, refused)
        tunnel_gate = SourceGate("tunnel", self.limits, refused)
        for sock in users:
            self._servers.append(
                await asyncssh.listen(
                    sock=sock,
                    server_factory=gated(self.user_front.server, user_gate),
                    encoding=None,
                    **common,
                )
            )
        for sock in tunnels:
            self._servers.append(
                await asyncssh.listen(
                    sock=sock,
                    server_factory=gated(lambda: TunnelServer(self), tunnel_gate),
                    encoding="utf-8",  # sessions: its own
                    line_editor=False,  # no pty: no editor around the control channel
                    **common,
                )
            )
        await self.dialback.start(tunnels[0].getsockname()[0], 0)
        self.tasks.loop(self._beat(), "proxy-beat")
        self.tasks.loop(self._watch_removals(), "removals")
        self.tasks.loop(self.lock_watch.run(), "locks")
        self.tasks.loop(self.audit.deliver(), "events")

    def drop_removed(self, tenant: str, host_id: str, reason: str) -> None:
        """A node was removed: close its tunnel here and end the sessions to it."""
        self.broker.drop_removed(tenant, host_id, reason)

    async def _watch_removals(self) -> None:
        """Poll the nodes removed anywhere in the platform, while this proxy holds tunnels or
        sessions: one call per period for all of them (decision 0017)."""
        while True:
            await asyncio.sleep(REMOVAL_POLL_SECONDS)
            if not len(self.registry) and not self.broker.live:
                continue
            try:
                removed = await self.control.node_removals()
            except ControlPlaneError as exc:
                logger.warning("node removals not read", extra={"reason": str(exc)})
                continue
            except Exception:  # an odd answer must not end the poll: removals would stop here
                logger.exception("node removals not read")
                continue
            for node in removed:
                self.drop_removed(node.tenant, node.host_id, "removed from the cluster")

    async def _beat(self) -> None:
        while True:
            try:
                peer_addr = self.peering.addr if self.peering is not None else ""
                await self.control.proxy_alive(self.proxy_id, peer_addr)
            except ControlPlaneError as exc:
                logger.warning("proxy liveness not recorded", extra={"reason": str(exc)})
            except Exception:  # nor the beat: other proxies would think this one gone
                logger.exception("proxy liveness not recorded")
            await asyncio.sleep(PROXY_BEAT_SECONDS)

    async def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop as a drained proxy does, within ``drain`` seconds: stop accepting; end every
        live session (each with its ``session.end``, as any session ends); give nodes a
        moment to report their own ends over their tunnels; close the tunnels (their nodes go
        offline); then send what the audit outbox holds, and stop.

        Sessions still open when their time is up are cut and recorded as ended anyway: the
        audit log never misses the end of a session this proxy started. The last part of
        ``drain`` is kept for the audit flush.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain
        sessions_by = deadline - min(FLUSH_RESERVE, drain / 3)
        self.broker.draining = True
        for server in self._servers:
            server.close()
        self.dialback.close()
        if self.peering is not None:
            self.peering.close()
        await self._end_sessions(drain, sessions_by)
        for conn in list(self.users):
            conn.close()
        for tunnel in self.registry.all():
            tunnel.connection.close()
        for server in self._servers:
            await server.wait_closed()
        if self.peering is not None:
            await self.peering.wait_closed()
        async with self.audit.sending:  # a batch already sent is not sent again by the flush
            loops = self.tasks.cancel_loops()
        await asyncio.gather(*loops, return_exceptions=True)
        # presence writes of the tunnels just closed, subsystems ending: quick, but bounded
        await self.tasks.finish_jobs(max(0.5, sessions_by - loop.time()))
        try:
            flushed = await asyncio.wait_for(self.audit.flush(), max(1.0, deadline - loop.time()))
        except TimeoutError:
            flushed = False
        if not flushed:
            logger.error("audit events lost at shutdown", extra={"events": len(self.audit)})
        await self.tasks.close()

    async def _end_sessions(self, drain: float, sessions_by: float) -> None:
        """Close the live sessions, wait for them to end until ``sessions_by``, cut the rest,
        then give the nodes a moment to send their own ends."""
        loop = asyncio.get_running_loop()
        live = bool(self.broker.live)
        if live:
            logger.info(
                "draining", extra={"sessions": len(self.broker.live), "drain_seconds": drain}
            )
        closed: set[Splice] = set()
        while self.broker.live and loop.time() < sessions_by:
            for splice in set(self.broker.live) - closed:  # those opening are closed once open
                if splice.close():
                    closed.add(splice)
            await self.broker.wait_ended(min(0.1, sessions_by - loop.time()))
        for splice in self.broker.live:
            logger.warning(
                "session cut at the drain deadline",
                extra={"session_id": self.broker.session_id(splice)},
            )
            splice.abandon()
        if live:  # the nodes' own session.end and exec events come over the tunnels
            await asyncio.sleep(max(0.0, min(NODE_REPORT_GRACE, sessions_by - loop.time())))

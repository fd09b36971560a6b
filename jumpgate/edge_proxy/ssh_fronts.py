"""The proxy's SSH listeners: the user front for people, and the tunnel front for node
agents (``tunnel_front``), sharing one tunnel registry.

User front (3023): users log in with their certificate; its CA tells the tenant (SSH sees no
hostname). A ``direct-tcpip`` channel to ``NODE:22`` (or 3022), or a ``proxy:NODE:PORT``
subsystem, is checked with the control plane (node still joined, user not locked or
removed) and then spliced onto the node: on a data connection the agent dials back for the
session (``dialback``), or else on a channel through the node's tunnel. Either way the
user's SSH session stays end to end with the node: the proxy forwards bytes and never holds
session keys.
"""

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh

from jumpgate.edge_proxy import audit_intake, recordings
from jumpgate.edge_proxy.connections import ChannelSlots, ConnectionLimits, SourceGate, gated
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.dialback import DialBack
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_budget import NodeBudgets, TunnelLimits
from jumpgate.edge_proxy.peering import Peering, PeerRefused
from jumpgate.edge_proxy.registry import AmbiguousNode, Tunnel, TunnelRegistry, UnknownNode
from jumpgate.edge_proxy.splice import ChannelSide, Splice
from jumpgate.edge_proxy.tunnel_front import TunnelServer, openssh_key
from jumpgate.protocol import models, outbox, ports
from jumpgate.protocol.audit import EventType, field_text
from jumpgate.protocol.names import MAX_NODENAME, node_name, shown
from jumpgate.protocol.outbox import Outbox
from jumpgate.protocol.ssh_identity import CertIdentity, cert_identity

logger = logging.getLogger(__name__)

NODE_SSH_PORTS = (22, ports.NODE_SSH)
PROXY_BEAT_SECONDS = 60.0
EVENT_LINGER = 0.5
"""How long the proxy lets audit events gather before sending a batch."""
DRAIN_SECONDS = 10.0
"""How long a stopping proxy gives its live sessions, and their audit, to end."""
FLUSH_RESERVE = 2.0
"""Of the drain, what is kept for sending the audit outbox once the sessions have ended."""
REMOVAL_POLL_SECONDS = 2.0
"""How often a proxy holding tunnels asks which nodes were removed (closed within 5 s)."""
NODE_REPORT_GRACE = 1.0
"""After ending sessions, how long tunnels stay open for the nodes to report their ends."""
FIELD_CHARS = 1024
"""The most characters of one string field of the proxy's own audit events."""


def _target(text: str) -> tuple[str, int]:
    """``NODE`` or ``NODE:PORT`` of a proxy subsystem; only a node's SSH port is reachable."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "22"
    if not host or not port.isdigit():
        raise ValueError(f"proxy subsystem target {shown(text)!r} is not NODE or NODE:PORT")
    _check_port(int(port))
    return host, int(port)


def _check_port(port: int) -> None:
    if port not in NODE_SSH_PORTS:
        raise ValueError(f"only a node's SSH port (22 or 3022) can be reached, not {port}")


@dataclass(frozen=True)
class Caller:
    """Who a user connection is: the certificate's user, the login asked for, from where."""

    identity: CertIdentity
    login: str
    remote_addr: str


class _UserServer(asyncssh.SSHServer):
    """One user's connection to the proxy; it may hold only so many channels open at once
    (each spliced to a node costs the node a connection)."""

    def __init__(self, fronts: "SSHFronts") -> None:
        self.fronts = fronts
        self._conn: asyncssh.SSHServerConnection
        self.tenant: str | None = None
        self.caller: Caller | None = None
        self._login = ""
        limits = fronts.limits
        self._sessions = ChannelSlots("sessions", limits.max_sessions_per_connection)
        self._forwards = ChannelSlots("forwarded channels", limits.max_forwards_per_connection)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self.fronts.users.add(conn)

    def begin_auth(self, username: str) -> bool:
        self._login = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        tenant = await self.fronts.control.tenant_by_user_ca(openssh_key(key))
        if tenant is None:
            self.fronts.metrics.handshake_failures["unknown_user_ca"] += 1
            return False
        self.tenant = tenant
        return True

    def auth_completed(self) -> None:
        identity = cert_identity(self._conn)
        if identity is not None:
            peer = self._conn.get_extra_info("peername") or ("", 0)
            self.caller = Caller(identity, self._login, f"{peer[0]}:{peer[1]}")

    async def route(self, name: str) -> tuple[Tunnel | models.NodeLocation, Caller]:
        """Where the node is (a tunnel here, or another proxy's); ``Refused`` unless the
        user and the node can be told apart."""
        if self.tenant is None or self.caller is None:
            raise Refused("a Jumpgate user certificate is required: run jump login")
        return await self.fronts.route(self.tenant, name), self.caller

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[ChannelSide]:
        """``ssh -J`` and ``jump ssh``: refused at once, or spliced once the node answers."""
        try:
            _check_port(dest_port)
        except ValueError as exc:
            raise Refused(str(exc)).channel_error() from None
        return self._open(dest_host, self._forwards.take())

    async def _open(self, name: str, give_back: Callable[[], None]) -> ChannelSide:
        splice = Splice(on_end=self.fronts.ended)
        try:
            target, caller = await self.route(name)
            await self.fronts.connect(target, caller, splice)
        except Refused as exc:
            give_back()
            raise exc.channel_error() from None
        except BaseException:
            give_back()
            raise
        assert isinstance(splice.user, ChannelSide)
        _on_close(splice.user, give_back)
        return splice.user

    def session_requested(self) -> "_SessionSide":
        """``ssh -s proxy:NODE:PORT`` (OpenSSH ProxyCommand): the session becomes the stream."""
        give_back = self._sessions.take()
        splice = Splice(lambda splice: _SessionSide(splice, self), on_end=self.fronts.ended)
        assert isinstance(splice.user, _SessionSide)
        _on_close(splice.user, give_back)
        return splice.user


def _on_close(side: ChannelSide, give_back: Callable[[], None]) -> None:
    """Call ``give_back`` when the user's channel under ``side`` closes, however it ends."""
    lost = side.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        give_back()
        lost(exc)

    side.connection_lost = connection_lost  # type: ignore[method-assign]


class Refused(Exception):
    """A user's channel cannot reach the node; ``str()`` is what the user is told."""

    def __init__(self, message: str, code: int = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED):
        super().__init__(message)
        self.code = code

    def channel_error(self) -> asyncssh.ChannelOpenError:
        return asyncssh.ChannelOpenError(self.code, str(self))


class _SessionSide(ChannelSide, asyncssh.SSHServerSession[bytes]):
    """The user's side of a ``proxy:NODE:PORT`` session: a splice half on a session channel.

    It accepts the subsystem, then connects to the node; until then what the user sends is
    held (and the channel paused). A refusal is written to stderr with exit status 1; the
    end of the node's stream ends the session with status 0.
    """

    def __init__(self, splice: Splice, owner: _UserServer) -> None:
        super().__init__(splice)
        self._owner = owner
        self._target = ""

    def shell_requested(self) -> bool:
        return True  # accepted only to explain, once started, what is served instead

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._target = subsystem
        return True

    def session_started(self) -> None:
        super().session_started()
        self._owner.fronts.spawn(self._attach(), name="subsystem")

    async def _attach(self) -> None:
        try:
            if not self._target.startswith("proxy:"):
                raise Refused(
                    "this proxy serves direct-tcpip (ssh -J) and the proxy:NODE:PORT subsystem, "
                    "not shells: see jump ssh"
                )
            try:
                host, _port = _target(self._target.removeprefix("proxy:"))
            except ValueError as exc:
                raise Refused(str(exc)) from None
            target, caller = await self._owner.route(host)
            await self._owner.fronts.connect(target, caller, self.splice)
        except Refused as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                self.chan.write_stderr(f"jumpgate proxy: {exc}\n".encode())
                self.chan.exit(1)

    def finish(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.exit(0)


class SSHFronts:
    """Both SSH listeners of one proxy, sharing the tunnel registry."""

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
    ) -> None:
        self.control = control
        self.proxy_id = proxy_id
        self.audit_budget = audit_budget or audit_intake.AuditBudget()
        self.audit_intakes: dict[tuple[str, str], audit_intake.TunnelAudit] = {}  # per node
        self.nodes = NodeBudgets(tunnel_limits)
        self.public_addr = public_addr
        self.registry = TunnelRegistry()
        self.metrics = Metrics()
        self.events: Outbox[models.AuditRecord] = Outbox(replace=stand_in)
        self.recording_settings = recordings.SettingsCache(control)
        self.peering: Peering | None = None  # set by ``start`` when given a peer listener
        self.limits = limits or ConnectionLimits()
        self.dialback = DialBack(self.limits, self.metrics.connections_refused)
        self._host_key = host_key
        self._servers: list[asyncssh.SSHAcceptor] = []
        self._tasks: set[asyncio.Task[object]] = set()
        self.users: weakref.WeakSet[asyncssh.SSHServerConnection] = weakref.WeakSet()
        self.live: set[Splice] = set()  # sessions started and not yet ended
        self._all_ended = asyncio.Event()
        self._all_ended.set()
        self._sending = asyncio.Lock()  # an audit batch on its way; see ``close``
        self.draining = False

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None:
        """Run a background call; log, never raise, if it fails."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[object]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background task failed", exc_info=task.exception())

    def find(self, tenant: str, name: str) -> Tunnel:
        """A live node here by name, uuid, ``uuid.tenant`` or ``name.tenant.<public-addr>``."""
        return self.registry.find(tenant, name, self.public_addr)

    async def route(self, tenant: str, name: str) -> Tunnel | models.NodeLocation:
        """The node's tunnel if this proxy holds it, else (when peering) the proxy that does;
        ``Refused`` when no proxy holds it or the name is ambiguous."""
        try:
            return self.find(tenant, name)
        except AmbiguousNode as exc:
            raise Refused(str(exc), asyncssh.OPEN_CONNECT_FAILED) from None
        except UnknownNode as exc:
            short = node_name(tenant, name, self.public_addr)
            if self.peering is None or len(short) > MAX_NODENAME:  # no node has so long a name
                raise Refused(str(exc), asyncssh.OPEN_CONNECT_FAILED) from None
            unknown = str(exc)
        try:
            location = await self.control.locate(tenant, short)
        except ControlPlaneError as exc:
            if exc.status in (400, 404):
                raise Refused(str(exc) or unknown, asyncssh.OPEN_CONNECT_FAILED) from None
            logger.warning("node not located", extra={"reason": str(exc)})
            raise Refused("the platform could not locate this node: try again") from None
        if location.proxy == self.proxy_id:  # its tunnel just went down here
            raise Refused(unknown, asyncssh.OPEN_CONNECT_FAILED)
        return location

    async def serve_peer(self, tenant: str, host_id: str, splice: Splice) -> None:
        """A peer relays a session it authorized to a node held here."""
        tunnel = self.registry.get(tenant, host_id)
        if tunnel is None:
            raise Refused(f"node {host_id} is not on proxy {self.proxy_id} any more: try again")
        await self.reach(tunnel, splice)

    async def connect(
        self, target: Tunnel | models.NodeLocation, caller: Caller, splice: Splice
    ) -> None:
        """Open the node's side of ``splice`` once the node and the user are both still allowed.

        One control-plane call per new connection answers both: a node removed since its
        tunnel came up is dropped, and a user removed or locked since their certificate was
        issued is refused (their certificate alone would last until it expires). Any failure
        is a ``Refused`` the user is shown.
        """
        try:
            await self._connect(target, caller, splice)
        except Refused:
            raise
        except Exception:
            logger.exception("opening a session failed", extra={"node": target.host_id})
            raise Refused(
                "the proxy failed to open this session: try again", asyncssh.OPEN_CONNECT_FAILED
            ) from None

    async def _connect(
        self, target: Tunnel | models.NodeLocation, caller: Caller, splice: Splice
    ) -> None:
        if self.draining:
            raise Refused("this proxy is stopping: try again", asyncssh.OPEN_CONNECT_FAILED)
        try:
            verdict = await self.control.session_auth(
                models.SessionAuth(
                    tenant=target.tenant,
                    host_id=target.host_id,
                    public_key=target.public_key,
                    user=caller.identity.user,
                    user_id=caller.identity.user_id,
                )
            )
        except ControlPlaneError as exc:
            logger.warning("session not authorized", extra={"reason": str(exc)})
            raise Refused("the platform could not check this session: try again") from None
        if verdict.node_refused is not None:
            self.drop_removed(target.tenant, target.host_id, verdict.node_refused)
            raise Refused(
                f"node {target.nodename!r} is not online in cluster {target.tenant!r}: see jump ls",
                asyncssh.OPEN_CONNECT_FAILED,
            )
        session = {
            "origin": "proxy",
            "user": caller.identity.user,
            "login": caller.login,
            "server_id": target.host_id,
            "nodename": target.nodename,
            "remote_addr": caller.remote_addr,
        }
        if verdict.user_refused is not None:
            self.metrics.handshake_failures["user_refused"] += 1
            self.record(EventType.AUTH, target.tenant, "W", **session, error=verdict.user_refused)
            raise Refused(verdict.user_refused)
        session["session_id"] = str(uuid.uuid4())
        if isinstance(target, models.NodeLocation):
            assert self.peering is not None
            try:
                await self.peering.relay(target, splice)
            except PeerRefused as exc:
                raise Refused(str(exc), asyncssh.OPEN_CONNECT_FAILED) from None
            self.metrics.peered_sessions += 1
            session["proxy"] = target.proxy
        else:
            await self.reach(target, splice)
        self._started(target.tenant, splice, session)

    async def reach(self, tunnel: Tunnel, splice: Splice) -> None:
        """Open ``splice``'s node side on a node this proxy holds: on a data connection the
        agent dials back, or else on a channel through its tunnel."""
        if tunnel.dialback:
            if await self.dialback.connect(tunnel, splice):
                self.metrics.dialback_sessions += 1
                return
            tunnel.dialback = False  # one slow failure per tunnel at most; the tunnel works
        try:
            await tunnel.connection.create_connection(
                splice.node_channel, tunnel.listen_host, tunnel.listen_port
            )
        except (asyncssh.Error, OSError) as exc:
            logger.info("node channel refused", extra={"node": tunnel.host_id, "reason": str(exc)})
            raise Refused(
                f"node {tunnel.nodename!r} did not answer: try again", asyncssh.OPEN_CONNECT_FAILED
            ) from None

    def _started(self, tenant: str, splice: Splice, session: dict[str, str]) -> None:
        self.metrics.sessions += 1
        splice.tenant, splice.session = tenant, session
        self.record(EventType.SESSION_START, tenant, "I", **session)
        if splice.ended:  # the node hung up before the start was recorded
            self._record_end(splice)
        else:
            self.live.add(splice)
            self._all_ended.clear()

    def ended(self, splice: Splice) -> None:
        """A splice ended: add its bytes to the metrics, and record the session's end."""
        self.metrics.bytes_in += splice.bytes_to_node
        self.metrics.bytes_out += splice.bytes_to_user
        self.live.discard(splice)
        if not self.live:
            self._all_ended.set()
        if splice.tenant:
            self._record_end(splice)

    def _record_end(self, splice: Splice) -> None:
        self.record(
            EventType.SESSION_END,
            splice.tenant,
            "I",
            **splice.session,
            bytes_to_node=splice.bytes_to_node,
            bytes_to_user=splice.bytes_to_user,
        )

    def record(self, event_type: EventType, tenant: str, outcome: str, **fields: Any) -> None:
        """Queue an audit event; they reach the control plane in batches (never in a session's
        way, and one call for many sessions, not two per session).

        Its text fields come from requests (user and node names): they are made text any
        store keeps, and bounded. Its ``event_id`` lets the control plane keep one copy of
        an event sent twice (a batch it refused is sent again one event at a time)."""
        clean = {
            k: field_text(v, FIELD_CHARS) if isinstance(v, str) else v for k, v in fields.items()
        }
        self.events.put(
            models.AuditRecord(
                type=event_type,
                tenant=tenant,
                outcome=outcome,
                time=datetime.now(UTC),
                fields={**clean, "event_id": uuid.uuid4().hex},
            )
        )

    async def start(
        self,
        *,
        user: tuple[str, int],
        tunnel: tuple[str, int],
        peer: tuple[str, int] | None = None,
        peer_public_addr: str = "",
    ) -> tuple[int, int]:
        """Listen for users, for tunnels and (with ``peer``) for other proxies; the bound
        user and tunnel ports (0 picks free ones)."""
        if peer is not None:
            self.peering = Peering(self.control, self.proxy_id, self.serve_peer)
            await self.peering.start(peer, peer_public_addr)
            self.spawn(self.peering.renew_forever(), name="peer-renew")
        common = {
            "server_host_keys": [self._host_key],
            "keepalive_interval": 30,
            "keepalive_count_max": 3,
            "login_timeout": self.limits.login_grace,
        }
        refused = self.metrics.connections_refused
        users = SourceGate("ssh", self.limits, refused)
        tunnels = SourceGate("tunnel", self.limits, refused)
        user_server = await asyncssh.listen(
            user[0],
            user[1],
            server_factory=gated(lambda: _UserServer(self), users),
            encoding=None,
            **common,
        )
        tunnel_server = await asyncssh.listen(
            tunnel[0],
            tunnel[1],
            server_factory=gated(lambda: TunnelServer(self), tunnels),  # sessions: its own
            encoding="utf-8",
            **common,
        )
        self._servers = [user_server, tunnel_server]
        await self.dialback.start(tunnel[0], 0)
        self.spawn(self._beat(), name="proxy-beat")
        self.spawn(self._watch_removals(), name="removals")
        self.spawn(self.events.deliver(self._send_events, linger=EVENT_LINGER), name="events")
        return user_server.sockets[0].getsockname()[1], tunnel_server.sockets[0].getsockname()[1]

    def drop_removed(self, tenant: str, host_id: str, reason: str) -> None:
        """A node was removed: close its tunnel if held here (no presence write, its record
        is gone) and end the sessions to it that this proxy carries."""
        tunnel = self.registry.get(tenant, host_id)
        sessions = [
            s for s in self.live if s.tenant == tenant and s.session.get("server_id") == host_id
        ]
        if tunnel is None and not sessions:
            return
        logger.info(
            "node removed: its tunnel is closed",
            extra={
                "tenant": tenant,
                "node": host_id,
                "tunnel": tunnel is not None,
                "sessions": len(sessions),
                "reason": reason,
            },
        )
        if tunnel is not None:
            self.registry.remove(tunnel)
            tunnel.connection.close()
        for splice in sessions:
            splice.close()

    async def _watch_removals(self) -> None:
        """Poll the nodes removed anywhere in the platform, while this proxy holds tunnels or
        sessions: one call per period for all of them (decision 0017)."""
        while True:
            await asyncio.sleep(REMOVAL_POLL_SECONDS)
            if not len(self.registry) and not self.live:
                continue
            try:
                removed = await self.control.node_removals()
            except ControlPlaneError as exc:
                logger.warning("node removals not read", extra={"reason": str(exc)})
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
            await asyncio.sleep(PROXY_BEAT_SECONDS)

    async def send_audit(self, batch: list[models.AuditRecord]) -> None:
        """Hand ``batch`` to the control plane; ``Refused`` when it refuses it as it is (4xx),
        so the outbox sends it again event by event, and replaces those refused on their own
        (``stand_in``); any other failure is tried again later (decision 0017)."""
        try:
            await self.control.audit(batch)
        except ControlPlaneError as exc:
            if exc.for_good:
                raise outbox.Refused(str(exc)) from exc
            raise

    async def _send_events(self, batch: list[models.AuditRecord]) -> None:
        """The delivery task's send: under a lock, so ``close`` never cancels it mid-batch."""
        async with self._sending:
            await self.send_audit(batch)

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
        self.draining = True
        for server in self._servers:
            server.close()
        self.dialback.close()
        if self.peering is not None:
            self.peering.close()
        live = bool(self.live)
        if live:
            logger.info("draining", extra={"sessions": len(self.live), "drain_seconds": drain})
        closed: set[Splice] = set()
        while self.live and loop.time() < sessions_by:
            for splice in self.live - closed:  # those still opening are closed once open
                if splice.close():
                    closed.add(splice)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._all_ended.wait(), max(0.0, min(0.1, sessions_by - loop.time()))
                )
        for splice in list(self.live):
            logger.warning(
                "session cut at the drain deadline",
                extra={"session_id": splice.session.get("session_id", "")},
            )
            splice.abandon()
        if live:  # the nodes' own session.end and exec events come over the tunnels
            await asyncio.sleep(max(0.0, min(NODE_REPORT_GRACE, sessions_by - loop.time())))
        for conn in list(self.users):
            conn.close()
        for tunnel in self.registry.all():
            tunnel.connection.close()
        for server in self._servers:
            await server.wait_closed()
        if self.peering is not None:
            await self.peering.wait_closed()
        background = ("proxy-beat", "events", "peer-renew", "removals")
        loops = [t for t in self._tasks if t.get_name() in background]
        async with self._sending:  # a batch already sent is not sent again by the flush
            for task in loops:
                task.cancel()
        pending = [t for t in self._tasks if t not in loops]
        if pending:
            # presence writes of the tunnels just closed, subsystems ending: quick, but bounded
            _, late = await asyncio.wait(pending, timeout=max(0.5, sessions_by - loop.time()))
            for task in late:
                task.cancel()
        try:
            flushed = await asyncio.wait_for(
                self.events.flush(self.send_audit), max(1.0, deadline - loop.time())
            )
        except TimeoutError:
            flushed = False
        if not flushed:
            logger.error("audit events lost at shutdown", extra={"events": len(self.events)})
        await asyncio.gather(*self._tasks, return_exceptions=True)


def stand_in(record: models.AuditRecord, reason: str) -> models.AuditRecord:
    """The ``audit.dropped`` event that takes the place of one of the proxy's own events the
    control plane refused for good: its tenant, type, ids and why, never its other fields
    (they may be what was refused). Its id is derived from the refused event's, so a copy
    sent again is kept once."""
    fields: dict[str, str | int | bool | None] = {
        "origin": "proxy",
        "dropped_type": str(record.type),
        "error": field_text(f"refused by the platform: {reason}", 300),
    }
    for name in ("session_id", "server_id"):
        value = record.fields.get(name)
        if isinstance(value, str):
            fields[name] = field_text(value, 128)
    original = record.fields.get("event_id")
    if isinstance(original, str):
        fields["event_id"] = uuid.uuid5(uuid.NAMESPACE_OID, field_text(original, 128)).hex
    return models.AuditRecord(
        type=EventType.AUDIT_DROPPED,
        tenant=record.tenant,
        outcome="W",
        time=record.time,
        fields=fields,
    )

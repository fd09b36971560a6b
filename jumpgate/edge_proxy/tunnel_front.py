"""The proxy's tunnel front (3024): the connections node agents keep open to it.

An agent logs in as ``<host_id>.<tenant>`` with the host key it joined with (the control
plane checks it), asks to listen on its SSH port, and keeps the connection open; that request
registers the tunnel, and a second one on ``ports.DIALBACK`` lets the agent dial back for
sessions. On the same connection the node sends its heartbeats (presence is written only when
it changes), asks for a fresh host certificate, sends its audit events (within its budget,
``audit_intake``) and streams its recordings. Everything else a node asks is bounded per node,
per connection and per source (``node_budget``): a node's key must not slow other tenants.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh
from asyncssh.stream import SSHTCPStreamSession

from jumpgate.edge_proxy import audit_intake, recordings
from jumpgate.edge_proxy.connections import ChannelSlots, LogThrottle, source_key
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_budget import NodeBudget, NodeBudgets
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.protocol import models, ports
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.channel_window import bound_receive_window
from jumpgate.protocol.tunnel import (
    AUDIT_SUBSYSTEM,
    HEARTBEAT_SUBSYSTEM,
    LISTEN_HOST,
    MAX_LINE_BYTES,
    RENEW_SUBSYSTEM,
)

logger = logging.getLogger(__name__)

MAX_AUDIT_BATCH = 100


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

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None: ...


class OverPace(ValueError):
    """A node sent lines faster than its budget: the channel is ended, saying so (pausing
    the reader instead still let the node keep the proxy busy: asyncssh keeps receiving)."""


async def json_lines(
    process: asyncssh.SSHServerProcess[str], pace: Callable[[], float] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects a node sends on a tunnel subsystem, one a line.

    ``ValueError`` for a line that is too long, not JSON or not an object; blank lines (and
    the ``""`` asyncssh yields when EOF arrives while it waits for a line) are skipped.
    ``pace`` says whether a line is over its budget (seconds it would have to wait):
    ``OverPace`` then, before the line is parsed.
    """
    async for line in process.stdin:
        if not line.strip():
            continue
        if pace is not None and pace():
            raise OverPace("more heartbeat lines than a node sends")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"a line is longer than {MAX_LINE_BYTES} bytes")
        try:
            value = json.loads(line)
        except RecursionError:  # deep nesting: not a ValueError, and it would end the tunnel
            raise ValueError("a line is nested too deeply") from None
        if not isinstance(value, dict):
            raise ValueError("each line must be a JSON object")
        yield value


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
        self.channels = ChannelSlots("channels", fronts.nodes.limits.channels_per_connection)

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
        if self.node is not None and not self._counted:
            self._counted = True
            self.budget.connections += 1

    def session_requested(self) -> "asyncssh.SSHServerProcess[str]":
        """A session channel (heartbeat, renew, audit) holds one of the connection's channel
        slots from when it is opened, whether or not it ever asks for a subsystem, until it
        closes; none free: the open fails saying so."""
        give_back = self.channels.take()
        process: asyncssh.SSHServerProcess[str] = asyncssh.SSHServerProcess(
            serve_subsystem, None, 0, False
        )
        lost = process.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            give_back()
            lost(exc)

        process.connection_lost = connection_lost  # type: ignore[method-assign]
        return process

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

    async def heartbeat(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Read JSON heartbeats; report presence when what the node says changes, at most
        once per ``presence_every`` (changes in between coalesced), on one channel at a time."""
        node, tunnel = self.node, self.tunnel
        if node is None or tunnel is None:
            process.exit(1)
            return
        budget = self.budget
        if budget.heartbeat_open:
            process.stderr.write("heartbeat: one heartbeat channel at a time: close the other\n")
            process.exit(audit_intake.TEMPFAIL)
            return
        budget.heartbeat_open = True
        try:
            async for beat in json_lines(process, budget.beat_wait):
                presence = self._presence(node, beat)
                if presence is not None:
                    await self._report(tunnel, budget, presence)
        except OverPace:
            limits = self._fronts.nodes.limits
            process.stderr.write(
                f"heartbeat: more than {limits.heartbeat_burst} lines at once or "
                f"{limits.heartbeats_per_second:g} a second: send one when something changes\n"
            )
            process.exit(audit_intake.TEMPFAIL)
            return
        except ValueError as exc:
            logger.info("bad heartbeat", extra={"node": node.host_id, "reason": str(exc)})
        except ControlPlaneError as exc:
            logger.warning(
                "presence not recorded", extra={"node": node.host_id, "reason": str(exc)}
            )
        finally:
            budget.heartbeat_open = False
        process.exit(0)

    async def _report(self, tunnel: Tunnel, budget: NodeBudget, presence: models.Presence) -> None:
        """Write ``presence`` now if its turn has come, else leave it to a flush (one per node)."""
        wait = budget.presence_wait(presence)
        if wait is None:
            return
        if not wait:
            await self._write(budget, presence)
        elif not budget.flushing:
            budget.flushing = True
            self._fronts.spawn(self._flush(tunnel, budget, wait), name="presence-flush")

    async def _write(self, budget: NodeBudget, presence: models.Presence) -> None:
        """The turn is taken before the call, so no other write overtakes this one."""
        budget.wrote(presence)
        try:
            await self._fronts.control.presence(presence)
        except ControlPlaneError:
            budget.gone()  # not written: the next heartbeat writes it again
            raise

    async def _flush(self, tunnel: Tunnel, budget: NodeBudget, wait: float) -> None:
        """Write the change that waited for its turn, unless the tunnel went down meanwhile."""
        due: float | None = wait
        try:
            while due is not None:
                await asyncio.sleep(due)
                pending = budget.pending
                if (
                    pending is None
                    or self._fronts.registry.get(tunnel.tenant, tunnel.host_id) is not tunnel
                ):
                    return
                due = budget.presence_wait(pending)
                if due == 0:
                    await self._write(budget, pending)
                    due = None if budget.pending is None else budget.presence_wait(budget.pending)
        except ControlPlaneError as exc:
            logger.warning(
                "presence not recorded", extra={"node": tunnel.host_id, "reason": str(exc)}
            )
        finally:
            budget.flushing = False

    def _presence(self, node: models.TunnelNode, beat: dict[str, Any]) -> models.Presence | None:
        """What a heartbeat says, bounded; None (and a log line) if it makes no sense."""
        try:
            return models.Presence(
                tenant=node.tenant,
                host_id=node.host_id,
                proxy=self._fronts.proxy_id,
                hostname=str(beat.get("hostname", ""))[:253],
                addr=str(beat.get("addr", ""))[:64],
                version=str(beat.get("version", ""))[:64],
                labels={str(k)[:63]: str(v)[:255] for k, v in dict(beat.get("labels", {})).items()},
            )
        except (ValueError, TypeError):
            logger.info("bad heartbeat ignored", extra={"node": node.host_id})
            return None

    async def audit(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Take a batch of the node's own events, stamped with this tunnel's tenant and node,
        event by event and within the tunnel's budget (``audit_intake``)."""
        node = self.node
        if node is None:
            process.exit(1)
            return
        intake = self.intake
        if intake.channels >= intake.budget.channels:
            intake.over_budget += 1
            self._over_budget(node, "too many audit channels at once")
            process.stderr.write(
                f"audit: at most {intake.budget.channels} audit channels at once: try again\n"
            )
            process.exit(audit_intake.TEMPFAIL)
            return
        intake.channels += 1
        try:
            status = await self._audit_batch(process, node, intake)
        finally:
            intake.channels -= 1
        process.exit(status)

    async def _audit_batch(
        self,
        process: asyncssh.SSHServerProcess[str],
        node: models.TunnelNode,
        intake: audit_intake.TunnelAudit,
    ) -> int:
        if intake.exhausted():
            self._over_budget(node, "over its audit budget")
            process.stderr.write("audit: this node is over its audit budget: try again later\n")
            return audit_intake.TEMPFAIL
        lines: list[str] = []
        size = 0
        try:
            async for line in process.stdin:
                if not line.strip():
                    continue
                if len(lines) >= MAX_AUDIT_BATCH:
                    process.stderr.write(f"audit events refused: more than {MAX_AUDIT_BATCH}\n")
                    return 1
                lines.append(line)
                size += len(line)
                if intake.too_big(size):
                    break  # answered below without reading the rest
        except ValueError as exc:  # not UTF-8: the agent never sends that
            process.stderr.write(f"audit events refused: {str(exc)[:200]}\n")
            return 1
        if not lines:
            return 0
        wait = intake.wait_for(len(lines), size)
        if wait is None:
            self._over_budget(node, "over its audit budget")
            process.stderr.write("audit: this node is over its audit budget: try again later\n")
            return audit_intake.TEMPFAIL
        if wait:
            await asyncio.sleep(wait)
        received = datetime.now(UTC)
        records = [audit_intake.record(node, line, received, intake) for line in lines]
        refused = sum(r.type == EventType.AUDIT_DROPPED for r in records)
        if refused:
            logger.info(
                "node audit events dropped", extra={"node": node.host_id, "events": refused}
            )
        try:
            await self._fronts.control.audit(records)
        except ControlPlaneError as exc:
            if exc.status >= 500 or exc.status == 0:
                process.stderr.write(f"audit: the platform is out of reach: {str(exc)[:200]}\n")
                return audit_intake.TEMPFAIL
            return await self._audit_one_by_one(process, node, intake, records)
        return 0

    async def _audit_one_by_one(
        self,
        process: asyncssh.SSHServerProcess[str],
        node: models.TunnelNode,
        intake: audit_intake.TunnelAudit,
        records: list[models.AuditRecord],
    ) -> int:
        """The control plane refused the batch: send its events one at a time, each one it
        refuses replaced by ``audit.dropped`` (it deduplicates by ``event_id``)."""
        for item in records:
            try:
                await self._fronts.control.audit([item])
            except ControlPlaneError as exc:
                if exc.status >= 500 or exc.status == 0:
                    process.stderr.write(f"audit: the platform is out of reach: {exc}\n"[:300])
                    return audit_intake.TEMPFAIL
                intake.dropped += 1
                logger.info(
                    "node audit event refused by the platform: dropped",
                    extra={"node": node.host_id, "type": item.type, "reason": str(exc)[:300]},
                )
                source = {"type": str(item.type), "fields": item.fields}
                try:
                    await self._fronts.control.audit(
                        [audit_intake.dropped(node, f"refused by the platform: {exc}", source)]
                    )
                except ControlPlaneError as again:
                    process.stderr.write(f"audit: not recorded: {again}\n"[:300])
                    return audit_intake.TEMPFAIL
        return 0

    def _over_budget(self, node: models.TunnelNode, why: str) -> None:
        if self.intake.should_log():
            logger.warning(
                "node audit over budget: batches refused for now",
                extra={
                    "tenant": node.tenant,
                    "node": node.host_id,
                    "why": why,
                    "refused": self.intake.over_budget,
                },
            )

    async def renew(self, process: asyncssh.SSHServerProcess[str]) -> None:
        """Hand the node a fresh host certificate for the key it authenticated with: one at
        a time, a few at once and then one a minute (an agent renews every few hours)."""
        node = self.node
        if node is None:
            process.exit(1)
            return
        budget = self.budget
        if budget.renewing:
            process.stderr.write("renewal refused: one at a time: try again once it is answered\n")
            process.exit(1)
            return
        wait = budget.renewal_wait()
        if wait:
            limits = self._fronts.nodes.limits
            process.stderr.write(
                f"renewal refused: at most {limits.renewal_burst} renewals at once and "
                f"{limits.renewals_per_minute:g} a minute per node: try again in {wait} s\n"
            )
            process.exit(1)
            return
        budget.renewing = True
        try:
            certificate = await self._fronts.control.renew_host_cert(node.tenant, node.host_id)
        except ControlPlaneError as exc:
            process.stderr.write(f"renewal refused: {str(exc)[:300]}\n")
            process.exit(1)
            return
        finally:
            budget.renewing = False
        process.stdout.write(certificate + "\n")
        process.exit(0)


class TunnelListener(asyncssh.SSHListener):
    """What ``server_requested`` returns: the tunnel itself is the listener."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._port = port

    def get_port(self) -> int:
        return self._port


async def serve_subsystem(process: asyncssh.SSHServerProcess[str]) -> None:
    """A node's subsystem request on its tunnel: heartbeats, certificate renewal, audit."""
    owner = process.channel.get_connection().get_owner()
    served = {
        HEARTBEAT_SUBSYSTEM: TunnelServer.heartbeat,
        RENEW_SUBSYSTEM: TunnelServer.renew,
        AUDIT_SUBSYSTEM: TunnelServer.audit,
    }
    handler = served.get(process.subsystem or "")
    if not isinstance(owner, TunnelServer) or handler is None:
        process.stderr.write(f"only the {', '.join(served)} subsystems are served\n")
        process.exit(1)
        return
    # A handler that reads slower than the node sends (heartbeats are paced, audit waits for
    # its budget) pauses the channel; without this asyncssh would let the node send another
    # window at each resume, to be decrypted and buffered (decision 0019).
    bound_receive_window(process.channel)
    await handler(owner, process)

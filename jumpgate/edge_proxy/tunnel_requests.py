"""What a node asks of the platform on its tunnel, whichever channel carries it: presence
from its heartbeats (written only when it changes, at most once per ``presence_every``),
audit batches (within the node's budget, ``audit_intake``) and certificate renewals (a few at
once, then one a minute). The control channel (``tunnel_control``) and the subsystems of
older agents (``tunnel_legacy``) both serve requests through ``NodeRequests``; every limit
is the one the separate subsystems had (``node_budget``, decision 0019).
"""

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from jumpgate.edge_proxy import audit_intake
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.node_budget import NodeBudget, NodeBudgets
from jumpgate.edge_proxy.node_policy import NodePolicies
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.protocol import models
from jumpgate.protocol.tunnel_messages import (
    Ack,
    AuditBatch,
    Heartbeat,
    Message,
    Refusal,
    Renewed,
    RenewRequest,
    RolesAnswer,
    RolesRequest,
    Tempfail,
)

logger = logging.getLogger(__name__)


class Control(Protocol):
    """What the channel needs of the proxy (``TunnelHost``)."""

    control: ControlPlaneClient
    proxy_id: str
    registry: TunnelRegistry
    nodes: NodeBudgets
    policies: NodePolicies

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None: ...


class TunnelSide(Protocol):
    """What the channel needs of its tunnel connection (``tunnel_front.TunnelServer``)."""

    node: models.TunnelNode | None
    tunnel: Tunnel | None
    control_open: bool  # a control channel is being served on the connection

    @property
    def host(self) -> Control: ...

    @property
    def budget(self) -> NodeBudget: ...

    @property
    def intake(self) -> audit_intake.TunnelAudit: ...


class OverPace(ValueError):
    """A node sent lines faster than its budget: the channel is ended, saying so (pausing
    the reader instead still let the node keep the proxy busy: asyncssh keeps receiving)."""


def pace(budget: NodeBudget) -> None:
    """``OverPace`` when the node's line is over its heartbeat pace."""
    if budget.beat_wait():
        raise OverPace("more heartbeat lines than a node sends")


class NodeRequests:
    """Serves one node's requests, answering on its channel with ``send``. Made for each
    request while it is served, so an idle channel holds none."""

    __slots__ = ("_host", "_send", "_side")

    def __init__(self, side: TunnelSide, send: Callable[[Message], None]) -> None:
        self._side = side
        self._host = side.host
        self._send = send

    async def answer(self, request: AuditBatch | RenewRequest | RolesRequest) -> None:
        """Serve ``request`` and send its answer."""
        if isinstance(request, AuditBatch):
            self._send(await self._audit(request))
        elif isinstance(request, RolesRequest):
            self._send(await self.roles(request))
        else:
            self._send(await self.renew(request))

    async def roles(self, request: RolesRequest) -> RolesAnswer | Tempfail:
        """The current definitions of the roles a certificate names, in the node's tenant
        (never another's); "try again" when the control plane cannot say."""
        node = self._side.node
        assert node is not None
        try:
            roles = await self._host.policies.definitions(node.tenant, request.names)
        except ControlPlaneError as exc:
            return Tempfail(id=request.id, reason=f"roles not read: {str(exc)[:200]}: try again")
        return RolesAnswer(id=request.id, roles=roles)

    async def heartbeat(self, node: models.TunnelNode, beat: Heartbeat) -> None:
        """Report ``beat`` as the node's presence when it changes, in its turn."""
        tunnel = self._side.tunnel
        if tunnel is None:
            self._send(Refusal(reason="a heartbeat before the tunnel: listen on the SSH port"))
            return
        try:
            presence = models.Presence(
                tenant=node.tenant,
                host_id=node.host_id,
                proxy=self._host.proxy_id,
                hostname=beat.hostname,
                addr=beat.addr,
                version=beat.version,
                labels=dict(beat.labels),
            )
        except ValueError as exc:  # what the store would not take
            logger.info("bad heartbeat ignored", extra={"node": node.host_id})
            self._send(Refusal(reason=f"heartbeat ignored: {str(exc).splitlines()[0]}"[:300]))
            return
        try:
            await self._report(tunnel, self._side.budget, presence)
        except ControlPlaneError as exc:
            logger.warning(
                "presence not recorded", extra={"node": node.host_id, "reason": str(exc)}
            )

    async def _report(self, tunnel: Tunnel, budget: NodeBudget, presence: models.Presence) -> None:
        """Write ``presence`` now if its turn has come, else leave it to a flush (one per node)."""
        wait = budget.presence_wait(presence)
        if wait is None:
            return
        if not wait:
            await self._write(budget, presence)
        elif not budget.flushing:
            budget.flushing = True
            self._host.spawn(self._flush(tunnel, budget, wait), name="presence-flush")

    async def _write(self, budget: NodeBudget, presence: models.Presence) -> None:
        """The turn is taken before the call, so no other write overtakes this one."""
        budget.wrote(presence)
        try:
            await self._host.control.presence(presence)
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
                    or self._host.registry.get(tunnel.tenant, tunnel.host_id) is not tunnel
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

    async def _audit(self, batch: AuditBatch) -> Ack | Tempfail:
        node = self._side.node
        assert node is not None
        lines = [json.dumps(event) for event in batch.events]
        return await audit_intake.take(self._host.control, node, self._side.intake, batch.id, lines)

    async def renew(self, request: RenewRequest) -> Renewed | Refusal:
        """A fresh host certificate for the key the node authenticated with: one at a time,
        a few at once and then one a minute (an agent renews every few hours)."""
        node = self._side.node
        assert node is not None
        budget = self._side.budget
        if budget.renewing:
            return Refusal(
                id=request.id, reason="renewal refused: one at a time: try again once answered"
            )
        wait = budget.renewal_wait()
        if wait:
            limits = self._host.nodes.limits
            return Refusal(
                id=request.id,
                reason=f"renewal refused: at most {limits.renewal_burst} renewals at once and "
                f"{limits.renewals_per_minute:g} a minute per node: try again in {wait} s",
            )
        budget.renewing = True
        try:
            certificate = await self._host.control.renew_host_cert(node.tenant, node.host_id)
        except ControlPlaneError as exc:
            return Refusal(id=request.id, reason=f"renewal refused: {str(exc)[:300]}")
        finally:
            budget.renewing = False
        return Renewed(id=request.id, certificate=certificate)

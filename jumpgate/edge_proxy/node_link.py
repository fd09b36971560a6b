"""Opening a session's node side, however the node is reached.

``open(target, splice)`` hides the three ways: on a data connection the agent dials back for
the session (``dialback``, decision 0008), else on a channel through the node's tunnel, or,
for a node whose tunnel another proxy holds, through that proxy's peer listener
(``peering``). Any failure is a ``NodeUnreachable`` whose text is the user's one line.
"""

import logging

import asyncssh

from jumpgate.edge_proxy.dialback import DialBack
from jumpgate.edge_proxy.errors import NodeUnreachable
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.peering import Peering, PeerRefused
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.edge_proxy.splice import Splice
from jumpgate.protocol import models
from jumpgate.protocol.tunnel_messages import SessionOrigin

logger = logging.getLogger(__name__)


class NodeLink:
    """The node side of this proxy's sessions: dial-back, tunnel channel or peer relay."""

    def __init__(
        self, registry: TunnelRegistry, dialback: DialBack, metrics: Metrics, proxy_id: str
    ) -> None:
        self._registry = registry
        self._dialback = dialback
        self._metrics = metrics
        self._proxy_id = proxy_id
        self.peers: Peering | None = None  # set when the proxy listens for peers

    @property
    def peering(self) -> bool:
        """Whether a node this proxy does not hold may be reached through another proxy."""
        return self.peers is not None

    async def open(
        self,
        target: Tunnel | models.NodeLocation,
        splice: Splice,
        origin: SessionOrigin | None = None,
    ) -> None:
        """Open ``splice``'s node side on ``target``: a tunnel here, or another proxy's;
        the channel opened carries the session's ``origin`` to the node (decision 0030)."""
        if isinstance(target, models.NodeLocation):
            if self.peers is None:
                raise NodeUnreachable(f"node {target.nodename!r} is on another proxy: try again")
            try:
                await self.peers.relay(target, splice, origin)
            except PeerRefused as exc:
                raise NodeUnreachable(str(exc)) from None
            self._metrics.peered_sessions += 1
            return
        await self.reach(target, splice, origin)

    async def reach(
        self, tunnel: Tunnel, splice: Splice, origin: SessionOrigin | None = None
    ) -> None:
        """Open ``splice``'s node side on a node this proxy holds: on a data connection the
        agent dials back, or else on a channel through its tunnel."""
        if tunnel.dialback:
            if await self._dialback.connect(tunnel, splice, origin):
                self._metrics.dialback_sessions += 1
                return
            tunnel.dialback = False  # one slow failure per tunnel at most; the tunnel works
        try:
            await tunnel.connection.create_connection(
                splice.node_channel,
                tunnel.listen_host,
                tunnel.listen_port,
                *(origin.originator() if origin is not None else ()),
            )
        except (asyncssh.Error, OSError) as exc:
            logger.info("node channel refused", extra={"node": tunnel.host_id, "reason": str(exc)})
            raise NodeUnreachable(f"node {tunnel.nodename!r} did not answer: try again") from None

    async def serve_peer(
        self, tenant: str, host_id: str, splice: Splice, origin: SessionOrigin | None = None
    ) -> None:
        """A peer relays a session it authorized to a node held here (its origin, if the
        peer said it)."""
        tunnel = self._registry.get(tenant, host_id)
        if tunnel is None:
            raise NodeUnreachable(
                f"node {host_id} is not on proxy {self._proxy_id} any more: try again"
            )
        await self.reach(tunnel, splice, origin)

"""The proxy's live tunnels, per tenant: who is reachable right now, by name or uuid.

Errors::

    UnknownNode     no live tunnel answers to that name in the tenant
    AmbiguousNode   several nodes share the name; the message lists their uuids
"""

from dataclasses import dataclass

import asyncssh

from jumpgate.protocol.names import AmbiguousNode, UnknownNode, pick_node

__all__ = ["AmbiguousNode", "Tunnel", "TunnelRegistry", "UnknownNode"]


@dataclass(eq=False)
class Tunnel:
    """One node's live tunnel and where to open channels on it."""

    tenant: str
    host_id: str
    nodename: str
    connection: asyncssh.SSHServerConnection
    listen_host: str
    listen_port: int
    public_key: str  # the key the tunnel authenticated with, rechecked per session
    dialback: bool = False  # the agent takes dial-back requests (see edge_proxy.dialback)


class TunnelRegistry:
    """Tunnels by tenant; a newer tunnel of the same node replaces an older one."""

    def __init__(self) -> None:
        self._tunnels: dict[str, dict[str, Tunnel]] = {}

    def add(self, tunnel: Tunnel) -> Tunnel | None:
        """Register ``tunnel``; returns the one it replaced, if any."""
        nodes = self._tunnels.setdefault(tunnel.tenant, {})
        previous = nodes.get(tunnel.host_id)
        nodes[tunnel.host_id] = tunnel
        return previous

    def remove(self, tunnel: Tunnel) -> bool:
        """Forget ``tunnel`` unless a newer one replaced it; True if it was current."""
        nodes = self._tunnels.get(tunnel.tenant, {})
        if nodes.get(tunnel.host_id) is tunnel:
            del nodes[tunnel.host_id]
            return True
        return False

    def drop(self, tenant: str, host_id: str) -> bool:
        """Forget the node's tunnel and close it (its node was removed); False if none here."""
        tunnel = self.get(tenant, host_id)
        if tunnel is None:
            return False
        self.remove(tunnel)
        tunnel.connection.close()
        return True

    def all(self) -> list[Tunnel]:
        """Every live tunnel."""
        return [t for nodes in self._tunnels.values() for t in nodes.values()]

    def __len__(self) -> int:
        return sum(len(nodes) for nodes in self._tunnels.values())

    def get(self, tenant: str, host_id: str) -> Tunnel | None:
        """The tunnel of the node with uuid ``host_id``, if it is on this proxy."""
        return self._tunnels.get(tenant, {}).get(host_id)

    def find(self, tenant: str, name: str, public_addr: str = "") -> Tunnel:
        """The tunnel of the node ``name`` names (see ``protocol.names.node_name``)."""
        return pick_node(tenant, name, self._tunnels.get(tenant, {}).values(), public_addr)

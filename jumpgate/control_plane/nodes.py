"""Nodes: tunnel authentication, presence, listing and removal.

Presence costs writes only when it changes: a tunnel coming up on a proxy, or going down.
Each proxy refreshes one liveness record a minute for all its tunnels, so a proxy that dies
takes its nodes offline within ``PROXY_TTL`` without a write per node. A node that has been
offline longer than ``GONE_AFTER`` leaves listings; its record stays until removed.

Removing a node also leaves a tombstone in the platform scope for ``REMOVAL_KEPT``: every
proxy polls those (one query, whatever the number of nodes) and closes a removed node's
tunnel within seconds, wherever the removal was served.
"""

import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from jumpgate.control_plane import keys, records
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import Conflict, InvalidRequest, NotFound, Unauthenticated
from jumpgate.control_plane.records import NodeRecord, NodeRemoval, ProxyRecord
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import KeyNotFound
from jumpgate.protocol.names import AmbiguousNode, UnknownNode, check_tenant_name, pick_node

PROXY_TTL = timedelta(seconds=90)
"""A proxy refreshes its liveness every minute; 90 s of silence means it is gone."""
GONE_AFTER = timedelta(minutes=10)
REMOVAL_KEPT = timedelta(minutes=5)
"""How long a removed node's tombstone stays for proxies to find (they poll every few
seconds; see docs/decisions/0017-draining-and-deleted-nodes.md)."""


@dataclass(frozen=True)
class NodeView:
    """A node as ``jump ls`` shows it."""

    record: NodeRecord
    online: bool


@dataclass(frozen=True)
class NodeInfo:
    """What an agent reports of itself in its heartbeat."""

    hostname: str
    addr: str
    version: str
    labels: dict[str, str]


class NodeService:
    """A tenant's nodes; see the module docstring for the presence model."""

    def __init__(self, store: Store, clock: Clock, *, gone_after: timedelta = GONE_AFTER) -> None:
        self._store = store
        self._clock = clock
        self._gone_after = gone_after

    def get(self, tenant: str, host_id: str) -> tuple[NodeRecord, str]:
        try:
            item = self._store.get(tenant, keys.node(host_id))
        except KeyNotFound as exc:
            raise NotFound(f"node {host_id} not found: see jumpctl nodes ls") from exc
        return NodeRecord.from_bytes(item.value), item.revision

    def remove(self, tenant: str, name: str) -> NodeRecord:
        """Forget a node (by uuid or unique name): its tunnel is refused from now on, and the
        proxy holding it closes it when it next polls ``removals`` (the tombstone is written
        first: a failure in between closes a tunnel that reconnects, never leaves one open)."""
        records = [NodeRecord.from_bytes(i.value) for i in self._store.list_all(tenant, keys.NODES)]
        matches = [r for r in records if name in (r.host_id, r.nodename)]
        if not matches:
            raise NotFound(f"no node named {name!r}: see jumpctl nodes ls")
        if len(matches) > 1:
            ids = ", ".join(sorted(m.host_id for m in matches))
            raise InvalidRequest(f"{len(matches)} nodes are named {name!r}: use a uuid ({ids})")
        node = matches[0]
        now = self._clock.now()
        tombstone = NodeRemoval(tenant, node.host_id, node.nodename, now)
        self._store.put(
            PLATFORM,
            keys.node_removal(tenant, node.host_id),
            tombstone.to_bytes(),
            expires=now + REMOVAL_KEPT,
        )
        self._store.delete(tenant, keys.node(node.host_id))
        return node

    def removals(self) -> list[NodeRemoval]:
        """Nodes removed in the last ``REMOVAL_KEPT``, in every tenant (proxies poll this)."""
        now = self._clock.now()
        found = (
            NodeRemoval.from_bytes(item.value)
            for item in self._store.list_all(PLATFORM, keys.NODE_REMOVALS)
        )
        return [r for r in found if now - r.removed < REMOVAL_KEPT]  # stores expire late

    def authenticate_tunnel(self, tenant: str, host_id: str, public_key: str) -> NodeRecord:
        """The node whose tunnel presents ``public_key``; refused unless it joined with it."""
        try:
            check_tenant_name(tenant)
            record, _ = self.get(tenant, host_id)
        except (ValueError, NotFound) as exc:
            raise Unauthenticated("node is not joined to this cluster: join it again") from exc
        if not secrets.compare_digest(
            record.public_key.strip().encode(), public_key.strip().encode()
        ):
            raise Unauthenticated("node key does not match the one it joined with")
        return record

    def set_presence(
        self,
        tenant: str,
        host_id: str,
        *,
        proxy: str | None,
        info: NodeInfo | None = None,
    ) -> bool:
        """Record the tunnel up (on ``proxy``) or down (``None``); True if anything changed."""
        changes: dict[str, object] = {"proxy": proxy}
        if info is not None:
            changes.update(
                hostname=info.hostname, addr=info.addr, version=info.version, labels=info.labels
            )

        def change(record: NodeRecord) -> NodeRecord | None:
            updated = replace(record, **changes)  # type: ignore[arg-type]
            if updated == record:
                return None
            return replace(updated, seen=self._clock.now())

        try:
            return (
                records.update(self._store, tenant, keys.node(host_id), NodeRecord, change)
                is not None
            )
        except KeyNotFound as exc:
            raise NotFound(f"node {host_id} not found: see jumpctl nodes ls") from exc
        except Conflict:
            return False

    def proxy_alive(self, proxy_id: str, peer_addr: str = "") -> None:
        """A proxy says it is alive for the next ``PROXY_TTL``, and where peers reach it."""
        record = ProxyRecord(
            proxy_id=proxy_id, alive_until=self._clock.now() + PROXY_TTL, peer_addr=peer_addr
        )
        self._store.put(
            PLATFORM, keys.proxy(proxy_id), record.to_bytes(), expires=record.alive_until
        )

    def _live_proxies(self) -> dict[str, ProxyRecord]:
        records = (
            ProxyRecord.from_bytes(item.value)
            for item in self._store.list_all(PLATFORM, "proxies/")
        )
        return {record.proxy_id: record for record in records}

    def locate(self, tenant: str, name: str) -> tuple[NodeRecord, ProxyRecord]:
        """The online node named ``name`` (uuid, ``uuid.tenant`` or nodename) and the live
        proxy holding its tunnel; ``NotFound`` if none is online, ``InvalidRequest`` if
        several share the name."""
        proxies = self._live_proxies()
        records = (NodeRecord.from_bytes(i.value) for i in self._store.list_all(tenant, keys.NODES))
        online = [r for r in records if r.proxy is not None and r.proxy in proxies]
        try:
            node = pick_node(tenant, name, online)
        except UnknownNode as exc:
            raise NotFound(str(exc)) from None
        except AmbiguousNode as exc:
            raise InvalidRequest(str(exc)) from None
        assert node.proxy is not None
        return node, proxies[node.proxy]

    def list(self, tenant: str) -> list[NodeView]:
        """Nodes online now, and those offline for less than ``gone_after``."""
        now = self._clock.now()
        proxies = self._live_proxies()
        views = []
        for item in self._store.list_all(tenant, keys.NODES):
            record = NodeRecord.from_bytes(item.value)
            online = record.proxy is not None and record.proxy in proxies
            last_seen: datetime = record.seen or record.joined
            if online or now - last_seen < self._gone_after:
                views.append(NodeView(record, online))
        return sorted(views, key=lambda v: (v.record.nodename, v.record.host_id))

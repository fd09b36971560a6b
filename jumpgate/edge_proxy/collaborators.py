"""What the session broker is handed: small protocols over the control-plane client, the
tunnel registry, the node link, the audit outbox and a session's byte pipe, so that the
broker speaks no SSH and is tested with fakes (``broker``)."""

from datetime import datetime
from typing import Any, Protocol, TypeVar

from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.tunnel_messages import SessionOrigin


class HeldNode(Protocol):
    """A node whose tunnel this proxy holds (``registry.Tunnel``)."""

    @property
    def tenant(self) -> str: ...
    @property
    def host_id(self) -> str: ...
    @property
    def nodename(self) -> str: ...
    @property
    def public_key(self) -> str: ...


T = TypeVar("T", bound=HeldNode)
T_co = TypeVar("T_co", bound=HeldNode, covariant=True)
T_contra = TypeVar("T_contra", bound=HeldNode, contravariant=True)


class Pipe(Protocol):
    """A session's two joined byte streams (``splice.Splice``), as the broker sees them."""

    @property
    def ended(self) -> bool: ...
    @property
    def bytes_to_node(self) -> int: ...
    @property
    def bytes_to_user(self) -> int: ...
    def close(self) -> bool: ...
    def abandon(self) -> None: ...
    def tell(self, line: str) -> None: ...


P = TypeVar("P", bound=Pipe)
P_contra = TypeVar("P_contra", bound=Pipe, contravariant=True)


class ControlClient(Protocol):
    """What the broker asks the control plane (``control.ControlPlaneClient``)."""

    async def session_auth(self, body: models.SessionAuth) -> models.SessionVerdict: ...
    async def locate(self, tenant: str, name: str) -> models.NodeLocation: ...


class Tunnels(Protocol[T_co]):
    """The tunnels this proxy holds (``registry.TunnelRegistry``)."""

    def find(self, tenant: str, name: str, public_addr: str = "") -> T_co: ...
    def drop(self, tenant: str, host_id: str) -> bool: ...


class NodeOpener(Protocol[T_contra, P_contra]):
    """Opens a session's node side (``node_link.NodeLink``); ``NodeUnreachable`` if not."""

    @property
    def peering(self) -> bool: ...
    async def open(
        self,
        target: T_contra | models.NodeLocation,
        pipe: P_contra,
        origin: SessionOrigin | None = None,
    ) -> None: ...


class AuditSink(Protocol):
    """Where the proxy's own audit events go (``proxy_audit.AuditOutbox``)."""

    def record(
        self,
        event_type: EventType,
        tenant: str,
        outcome: str,
        /,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> None: ...

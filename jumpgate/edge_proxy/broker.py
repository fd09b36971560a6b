"""The session broker: every decision on a user's way to a node, and its audit.

A front (the SSH user front today, a browser terminal later) knows who the caller is and
which node they name; the broker does the rest: it locates the node (a tunnel held here by
name, uuid, ``uuid.tenant`` or FQDN, else the proxy holding it when peering), asks the control
plane whether the node and the user are both still allowed (one call answers both: a node
removed since its tunnel came up, a user locked or removed since their certificate was
issued), has the node link open the node's side, and records the session's start and end.
Every refusal is a ``Refused`` whose text is the user's one line.

Its collaborators are small protocols (``collaborators``: a control-plane client, the tunnel
registry, the node link, an audit sink) and a clock, and the session's byte pipe is one too:
the broker speaks no SSH, so it is tested with fakes and any front can call it.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic

from jumpgate.edge_proxy.collaborators import (
    AuditSink,
    ControlClient,
    HeldNode,
    NodeOpener,
    P,
    Pipe,
    T,
    Tunnels,
)
from jumpgate.edge_proxy.control import ControlPlaneError
from jumpgate.edge_proxy.errors import NodeUnreachable, Refused
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.rejections import REJECTED_BURST, Rejections
from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.names import MAX_NODENAME, AmbiguousNode, UnknownNode, node_name
from jumpgate.protocol.tunnel_messages import SessionOrigin

__all__ = [
    "REJECTED_BURST",
    "AuditSink",
    "Caller",
    "ControlClient",
    "HeldNode",
    "LiveSession",
    "NodeOpener",
    "Pipe",
    "SessionBroker",
    "Tunnels",
]

logger = logging.getLogger(__name__)

STOPPING = "this proxy is stopping: try again"
PROXY_FAILED = "the proxy failed to open this session: try again"
NOT_CHECKED = "the platform could not check this session: try again"
NOT_LOCATED = "the platform could not locate this node: try again"


@dataclass(frozen=True)
class Caller:
    """Who asks for a session: the certificate's tenant and user, the login to the proxy,
    from where, and the certificate's roles; the front that authenticated them fills it in.
    ``login_is_nodes`` when the login is also the node's (``jump config``'s ProxyCommand
    passes ``%r``), so the proxy checks it; not for ``ssh -J``, whose login only the node sees.
    """

    tenant: str
    user: str
    user_id: str
    login: str
    remote_addr: str
    roles: tuple[str, ...] = ()
    login_is_nodes: bool = False


@dataclass(frozen=True)
class LiveSession(Generic[P]):
    """A session this proxy carries, as a lock is checked against it."""

    pipe: P
    tenant: str
    caller: Caller
    server_id: str
    nodename: str


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class SessionBroker(Generic[T, P]):
    """Grants, locates, opens and audits the sessions of one proxy, and knows which are live."""

    def __init__(
        self,
        control: ControlClient,
        tunnels: Tunnels[T],
        link: NodeOpener[T, P],
        audit: AuditSink,
        *,
        proxy_id: str,
        public_addr: str,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _now,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        self._control = control
        self._tunnels = tunnels
        self._link = link
        self._audit = audit
        self.proxy_id = proxy_id
        self.public_addr = public_addr
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._new_id = new_id
        self._live: dict[P, tuple[str, dict[str, str]]] = {}  # started, not yet ended
        self._callers: dict[P, Caller] = {}  # whose each live session is
        self._all_ended = asyncio.Event()
        self._all_ended.set()
        self.draining = False
        self._rejections = Rejections()

    async def open(self, caller: Caller, name: str, pipe: P) -> None:
        """Open ``pipe``'s node side on the node ``name`` names, once the node and the user
        are both still allowed; ``Refused`` with the user's one line if not. Every refusal
        is audited in the caller's tenant: a ``session.rejected`` W event naming the node as
        asked and the reason the user read (a refused user's is its ``auth`` W event)."""
        try:
            target = await self.locate(caller.tenant, name)
            try:
                await self._connect(target, caller, pipe)
            except Refused:
                raise
            except Exception:
                logger.exception("opening a session failed", extra={"node": target.host_id})
                raise Refused(PROXY_FAILED, unreachable=True) from None
        except Refused as refused:
            unrecorded = (
                None if refused.audited else self._rejections.due((caller.tenant, caller.user_id))
            )
            if unrecorded is not None:
                who = {
                    "user": caller.user,
                    "login": caller.login,
                    "nodename": name,
                    "remote_addr": caller.remote_addr,
                }
                more = {"rejected_unrecorded": unrecorded} if unrecorded else {}
                self._record(
                    EventType.SESSION_REJECTED, caller.tenant, "W", who, error=str(refused), **more
                )
            raise

    def login_refused(self, tenant: str, login: str, remote_addr: str) -> None:
        """A certificate of ``tenant``'s user CA was refused for ``login`` (not among its
        principals, or outside its validity: asyncssh checks both and says not which, nor
        whose the certificate was): an ``auth`` W event, held to the rejections' pace per
        source address."""
        source = Caller(tenant, "", f"source:{remote_addr.rpartition(':')[0]}", login, "")
        unrecorded = self._rejections.due((source.tenant, source.user_id))
        if unrecorded is None:
            return
        more = {"rejected_unrecorded": unrecorded} if unrecorded else {}
        error = f"login {login!r} refused: the certificate does not allow it, or is not valid now"
        fields = {"origin": "proxy", "login": login, "remote_addr": remote_addr}
        self._record(EventType.AUTH, tenant, "W", fields, error=error, **more)

    async def locate(self, tenant: str, name: str) -> T | models.NodeLocation:
        """The node's tunnel if this proxy holds it, else (when peering) the proxy that does;
        ``Refused`` when no proxy holds it or the name is ambiguous."""
        try:
            return self._tunnels.find(tenant, name, self.public_addr)
        except AmbiguousNode as exc:
            raise Refused(str(exc), unreachable=True) from None
        except UnknownNode as exc:
            short = node_name(tenant, name, self.public_addr)
            if not self._link.peering or len(short) > MAX_NODENAME:  # no node has such a name
                raise Refused(str(exc), unreachable=True) from None
            unknown = str(exc)
        try:
            location = await self._control.locate(tenant, short)
        except ControlPlaneError as exc:
            if exc.status in (400, 404):
                raise Refused(str(exc) or unknown, unreachable=True) from None
            logger.warning("node not located", extra={"reason": str(exc)})
            raise Refused(NOT_LOCATED) from None
        if location.proxy == self.proxy_id:  # its tunnel just went down here
            raise Refused(unknown, unreachable=True)
        return location

    async def _connect(self, target: T | models.NodeLocation, caller: Caller, pipe: P) -> None:
        if self.draining:
            raise Refused(STOPPING, unreachable=True)
        try:
            verdict = await self._control.session_auth(
                models.SessionAuth(
                    tenant=target.tenant,
                    host_id=target.host_id,
                    public_key=target.public_key,
                    user=caller.user,
                    user_id=caller.user_id,
                    login=caller.login if caller.login_is_nodes else "",
                )
            )
        except ControlPlaneError as exc:
            logger.warning("session not authorized", extra={"reason": str(exc)})
            raise Refused(NOT_CHECKED) from None
        if verdict.node_refused is not None:
            self.drop_removed(target.tenant, target.host_id, verdict.node_refused)
            raise Refused(
                f"node {target.nodename!r} is not online in cluster {target.tenant!r}: see jump ls",
                unreachable=True,
            )
        session = {
            "origin": "proxy",
            "user": caller.user,
            "login": caller.login,
            "server_id": target.host_id,
            "nodename": target.nodename,
            "remote_addr": caller.remote_addr,
        }
        if verdict.user_refused is not None:
            self.metrics.handshake_failures["user_refused"] += 1
            self._record(EventType.AUTH, target.tenant, "W", session, error=verdict.user_refused)
            raise Refused(verdict.user_refused, audited=True)
        if verdict.access_refused is not None:  # the roles or a lock, naming the node reached
            error = verdict.access_refused
            self._record(EventType.SESSION_REJECTED, target.tenant, "W", session, error=error)
            raise Refused(error, audited=True)
        session["session_id"] = self._new_id()
        origin = SessionOrigin.of(session["session_id"], caller.remote_addr)
        try:
            await self._link.open(target, pipe, origin)
        except NodeUnreachable as exc:
            raise Refused(str(exc), unreachable=True) from None
        if isinstance(target, models.NodeLocation):
            session["proxy"] = target.proxy
        self._started(target.tenant, pipe, session, caller)

    def _started(self, tenant: str, pipe: P, session: dict[str, str], caller: Caller) -> None:
        self.metrics.sessions += 1
        self._record(EventType.SESSION_START, tenant, "I", session)
        if pipe.ended:  # the node hung up before the start was recorded
            self._record_end(tenant, session, pipe)
        else:
            self._live[pipe] = (tenant, session)
            self._callers[pipe] = caller
            self._all_ended.clear()

    def ended(self, pipe: P) -> None:
        """A pipe ended (the splice's ``on_end``): count its bytes, record the session's end."""
        self.metrics.bytes_in += pipe.bytes_to_node
        self.metrics.bytes_out += pipe.bytes_to_user
        started = self._live.pop(pipe, None)
        self._callers.pop(pipe, None)
        if not self._live:
            self._all_ended.set()
        if started is not None:
            self._record_end(*started, pipe)

    def _record_end(self, tenant: str, session: dict[str, str], pipe: P) -> None:
        self._record(
            EventType.SESSION_END,
            tenant,
            "I",
            session,
            bytes_to_node=pipe.bytes_to_node,
            bytes_to_user=pipe.bytes_to_user,
        )

    def _record(
        self, event: EventType, tenant: str, outcome: str, session: dict[str, str], **more: Any
    ) -> None:
        self._audit.record(event, tenant, outcome, at=self._clock(), **session, **more)

    @property
    def live(self) -> list[P]:
        """The sessions started and not yet ended."""
        return list(self._live)

    def sessions(self) -> list[LiveSession[P]]:
        """The live sessions with whose they are and where they go (for the lock watch)."""
        return [
            LiveSession(pipe, tenant, self._callers[pipe], s["server_id"], s["nodename"])
            for pipe, (tenant, s) in self._live.items()
            if pipe in self._callers
        ]

    def end_reason(self, pipe: P, reason: str) -> None:
        """What the live session's ``session.end`` gives as its reason, when it ends."""
        started = self._live.get(pipe)
        if started is not None:
            started[1]["reason"] = reason

    def session_id(self, pipe: P) -> str:
        """The id the audit log knows a live session by, or ""."""
        started = self._live.get(pipe)
        return started[1].get("session_id", "") if started is not None else ""

    async def wait_ended(self, timeout: float) -> bool:
        """Whether every live session ended within ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_ended.wait(), max(0.0, timeout))
        return not self._live

    def drop_removed(self, tenant: str, host_id: str, reason: str) -> None:
        """A node was removed: close its tunnel if held here (no presence write, its record
        is gone) and end the sessions to it that this proxy carries."""
        sessions = [
            pipe
            for pipe, (held_by, session) in self._live.items()
            if held_by == tenant and session.get("server_id") == host_id
        ]
        tunnel = self._tunnels.drop(tenant, host_id)
        if not tunnel and not sessions:
            return
        logger.info(
            "node removed: its tunnel is closed",
            extra={
                "tenant": tenant,
                "node": host_id,
                "tunnel": tunnel,
                "sessions": len(sessions),
                "reason": reason,
            },
        )
        for pipe in sessions:
            pipe.close()

"""The users' SSH front (3023): thin asyncssh callbacks in front of the session broker.

Users log in with their certificate; its CA tells the tenant (SSH sees no hostname). A
``direct-tcpip`` channel to ``NODE:22`` (or 3022), or a ``proxy:NODE:PORT`` subsystem, is
handed to the broker, which decides and opens the node's side; this module only turns SSH
into a ``Caller`` and a node name, and a ``Refused`` back into what SSH says: a channel-open
failure, or a line on the session's stderr with exit status 1. The user's SSH session stays
end to end with the node: the proxy forwards bytes and never holds session keys.
"""

import contextlib
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Protocol

import asyncssh

from jumpgate.edge_proxy.asyncssh_adapter import on_certificate_checked, permit_the_hop
from jumpgate.edge_proxy.broker import Caller, SessionBroker
from jumpgate.edge_proxy.connections import ChannelSlots, ConnectionLimits
from jumpgate.edge_proxy.errors import Refused
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.registry import Tunnel
from jumpgate.edge_proxy.splice import ChannelSide, Splice
from jumpgate.protocol import ports
from jumpgate.protocol.names import shown
from jumpgate.protocol.ssh_identity import cert_identity

NODE_SSH_PORTS = (22, ports.NODE_SSH)
NOT_A_USER = "a Jumpgate user certificate is required: run jump login"
NOT_A_SHELL = (
    "this proxy serves direct-tcpip (ssh -J) and the proxy:NODE:PORT subsystem, not shells: "
    "see jump ssh"
)


class TenantsByCA(Protocol):
    """Which tenant a user CA key belongs to (``control.ControlPlaneClient``)."""

    async def tenant_by_user_ca(self, public_key: str) -> str | None: ...


Spawn = Callable[[Coroutine[Any, Any, object], str], None]
"""Runs a short background call under the service's supervision (``supervisor``)."""


def subsystem_target(text: str) -> tuple[str, int]:
    """``NODE`` or ``NODE:PORT`` of a proxy subsystem; only a node's SSH port is reachable."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "22"
    if not host or not port.isdigit():
        raise Refused(f"proxy subsystem target {shown(text)!r} is not NODE or NODE:PORT")
    check_port(int(port))
    return host, int(port)


def check_port(port: int) -> None:
    """``Refused`` unless ``port`` is a node's SSH port."""
    if port not in NODE_SSH_PORTS:
        raise Refused(f"only a node's SSH port (22 or 3022) can be reached, not {port}")


def channel_error(refused: Refused) -> asyncssh.ChannelOpenError:
    """What SSH says of a refusal: "connect failed" or "administratively prohibited"."""
    code = (
        asyncssh.OPEN_CONNECT_FAILED
        if refused.unreachable
        else asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
    )
    return asyncssh.ChannelOpenError(code, str(refused))


MAX_REFUSALS_KEPT = 8
"""Refused certificates one connection remembers to audit (each tenant and login once)."""


@dataclass(frozen=True)
class UserFront:
    """What every user connection shares: the broker, the tenant lookup, caps and counters."""

    broker: SessionBroker[Tunnel, Splice]
    tenants: TenantsByCA
    metrics: Metrics
    limits: ConnectionLimits
    spawn: Spawn
    users: weakref.WeakSet[asyncssh.SSHServerConnection]

    def server(self) -> "UserServer":
        """The asyncssh server factory of the user listener."""
        return UserServer(self)


class UserServer(asyncssh.SSHServer):
    """One user's connection to the proxy; it may hold only so many channels open at once
    (each spliced to a node costs the node a connection)."""

    def __init__(self, front: UserFront) -> None:
        self.front = front
        self._conn: asyncssh.SSHServerConnection
        self.tenant: str | None = None
        self.caller: Caller | None = None
        self._login = ""
        self._peer = ""
        self._shown: str | None = None  # the tenant of the certificate being checked
        self._refused: set[tuple[str, str]] = set()  # (tenant, login) asyncssh refused
        self._sessions = ChannelSlots("sessions", front.limits.max_sessions_per_connection)
        self._forwards = ChannelSlots(
            "forwarded channels", front.limits.max_forwards_per_connection
        )

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        self._peer = f"{peer[0]}:{peer[1]}"  # still known once the connection is lost
        self.front.users.add(conn)
        on_certificate_checked(conn, self._certificate_checked)

    def begin_auth(self, username: str) -> bool:
        self._login = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        public = key.export_public_key("openssh").decode().strip()
        tenant = await self.front.tenants.tenant_by_user_ca(public)
        if tenant is None:
            self.front.metrics.handshake_failures["unknown_user_ca"] += 1
            self._shown = None
            return False
        self.tenant = self._shown = tenant  # asyncssh then checks the login and the validity
        return True

    def _certificate_checked(self, passed: bool) -> None:
        """asyncssh checked a certificate shown (a query, or the signed request): one of a
        tenant's CA that it refused is remembered, to audit if no login follows."""
        if not passed and self._shown is not None and len(self._refused) < MAX_REFUSALS_KEPT:
            self._refused.add((self._shown, self._login))
        self._shown = None

    def auth_completed(self) -> None:
        # jumping is not forwarding: the hop opens direct-tcpip to a node (check_port)
        permit_the_hop(self._conn)
        identity = cert_identity(self._conn)
        if identity is not None and self.tenant is not None:
            self.caller = Caller(
                self.tenant,
                identity.user,
                identity.user_id,
                self._login,
                self._peer,
                roles=identity.roles,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        """Each certificate of a tenant's CA that asyncssh refused (a login it lacks, or
        expired) on a connection that never logged in: audited in that tenant. One that
        passed but was never signed with (a client asks whether a key would do before it
        signs; anyone may hold a certificate, which is public) was refused nothing."""
        if self.caller is None:
            for tenant, login in sorted(self._refused):
                self.front.broker.login_refused(tenant, login, self._peer)

    async def open(self, name: str, splice: Splice, *, login_is_nodes: bool = False) -> None:
        """Have the broker open ``splice`` to the node ``name`` names, as this caller
        (``login_is_nodes``: the login to the proxy is the node's too, see ``Caller``)."""
        if self.caller is None:
            raise Refused(NOT_A_USER)
        caller = replace(self.caller, login_is_nodes=True) if login_is_nodes else self.caller
        await self.front.broker.open(caller, name, splice)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[ChannelSide]:
        """``ssh -J`` and ``jump ssh``: refused at once, or spliced once the node answers."""
        try:
            check_port(dest_port)
        except Refused as exc:
            raise channel_error(exc) from None
        return self._forward(dest_host, self._forwards.take())

    async def _forward(self, name: str, give_back: Callable[[], None]) -> ChannelSide:
        splice = Splice(on_end=self.front.broker.ended)
        try:
            await self.open(name, splice)
        except Refused as exc:
            give_back()
            raise channel_error(exc) from None
        except BaseException:
            give_back()
            raise
        assert isinstance(splice.user, ChannelSide)
        _on_close(splice.user, give_back)
        return splice.user

    def session_requested(self) -> "SessionSide":
        """``ssh -s proxy:NODE:PORT`` (OpenSSH ProxyCommand): the session becomes the stream."""
        give_back = self._sessions.take()
        splice = Splice(lambda splice: SessionSide(splice, self), on_end=self.front.broker.ended)
        assert isinstance(splice.user, SessionSide)
        _on_close(splice.user, give_back)
        return splice.user


def _on_close(side: ChannelSide, give_back: Callable[[], None]) -> None:
    """Call ``give_back`` when the user's channel under ``side`` closes, however it ends."""
    lost = side.connection_lost

    def connection_lost(exc: Exception | None) -> None:
        give_back()
        lost(exc)

    side.connection_lost = connection_lost  # type: ignore[method-assign]


class SessionSide(ChannelSide, asyncssh.SSHServerSession[bytes]):
    """The user's side of a ``proxy:NODE:PORT`` session: a splice half on a session channel.

    It accepts the subsystem, then connects to the node; until then what the user sends is
    held (and the channel paused). A refusal is written to stderr with exit status 1; the
    end of the node's stream ends the session with status 0.
    """

    def __init__(self, splice: Splice, owner: UserServer) -> None:
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
        self._owner.front.spawn(self._attach(), "subsystem")

    async def _attach(self) -> None:
        try:
            if not self._target.startswith("proxy:"):
                raise Refused(NOT_A_SHELL)
            host, _port = subsystem_target(self._target.removeprefix("proxy:"))
            await self._owner.open(host, self.splice, login_is_nodes=True)
        except Refused as exc:
            with contextlib.suppress(OSError, asyncssh.Error):
                self.chan.write_stderr(f"jumpgate proxy: {exc}\n".encode())
                self.chan.exit(1)

    def finish(self) -> None:
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.exit(0)

    def tell(self, line: str) -> None:
        """On stderr, which OpenSSH shows from its ProxyCommand (a lock's message)."""
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.write_stderr(f"jumpgate proxy: {line}\n".encode())

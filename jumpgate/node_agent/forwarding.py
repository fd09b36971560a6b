"""Port forwarding on the node, as sshd serves it to a login whose certificate permits it.

asyncssh checks ``permit-port-forwarding`` itself (``check_certificate_permission``) before it
asks the server for any forward: without it a ``direct-tcpip`` channel is refused
"administratively prohibited" and a ``tcpip-forward`` request fails. What this module adds
is what sshd does beyond that, and what a shared agent must:

- **Remote forwards listen on the loopback** (``GatewayPorts no``, sshd's default): a request
  for ``127.0.0.1`` or ``::1`` binds that address, any other (``0.0.0.0``, ``*``, a name)
  binds the loopback of both families. A login that is not root gets no port below
  ``ip_unprivileged_port_start`` (1024): sshd binds in a process running as the login, which
  the kernel refuses; the agent, root, must refuse it itself.
- **Bounded like sessions**: at most ``max_forwards`` forwarded connections open at once on
  one user connection, and ``MAX_LISTENERS`` remote listeners; over either, a one-line
  refusal.
- **Audited**: a ``port`` event for every forward (``local``: a ``direct-tcpip`` channel from
  ``-L`` or ``-D``; ``remote``: a listener made, and each connection it accepts), held to the
  connection's audit budget (``audit_budget``). A connection over it forwards nothing more:
  its forwarded connections and listeners are closed, and new ones refused.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent import streamlocal
from jumpgate.node_agent.audit_budget import Budgets
from jumpgate.node_agent.sessions import Account
from jumpgate.protocol.audit import EventType

logger = logging.getLogger(__name__)

MAX_FORWARDS = 128
"""Forwarded connections (``-L``, ``-D``, and those a ``-R`` listener accepted) one user
connection may hold open at once: each is a descriptor of the agent, or two."""
MAX_LISTENERS = 16
"""Remote listeners (``-R``) one user connection may hold."""
LOOPBACK = ("127.0.0.1", "::1")
UNPRIVILEGED_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
RELAY_BYTES = 256 * 1024
OVER_BUDGET = (
    "port forwarding stopped on this connection: it went over its audit budget; "
    "open another connection"
)

Spawn = Callable[[Coroutine[Any, Any, None]], object]


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def privileged_refusal(port: int, *, uid: int) -> str | None:
    """Why ``uid`` may not listen on ``port`` (as the kernel would refuse it), or None."""
    if uid == 0 or port == 0:
        return None
    try:
        with open(UNPRIVILEGED_START) as setting:
            start = int(setting.read().strip())
    except (OSError, ValueError):
        start = 1024
    if port < start:
        return (
            f"port {port} is privileged (below {start}) and login is not root: "
            "forward a port of 1024 or more"
        )
    return None


def no_address(host: str, port: int) -> str | None:
    """Why no socket can take ``host:port`` (a port past 65535: SSH carries 32 bits), or None."""
    if not 0 <= port <= 65535:
        return f"port {port} is not a TCP port: use 1 to 65535"
    return "a host name cannot hold a NUL byte" if "\0" in host else None


def bind_hosts(requested: str) -> tuple[str, ...]:
    """The addresses a remote forward asked for as ``requested`` listens on (``GatewayPorts
    no``: the loopback only, the one family named if it names one)."""
    return (requested,) if requested in LOOPBACK else LOOPBACK


class RemoteListener(asyncssh.SSHListener):
    """A ``-R`` listener on the node's loopback: one server per address, one port."""

    def __init__(self, servers: list[asyncio.Server], port: int, on_close: Callable[[], None]):
        super().__init__()
        self._servers = servers
        self._port = port
        self._on_close = on_close

    @classmethod
    async def open(
        cls,
        hosts: tuple[str, ...],
        port: int,
        accepted: Callable[[asyncio.StreamReader, asyncio.StreamWriter], None],
        on_close: Callable[[], None],
    ) -> "RemoteListener":
        """Listen on ``hosts``, all on one port (the first bound picks it if ``port`` is 0);
        an address that cannot be bound (a node without IPv6) is skipped if another is."""
        servers: list[asyncio.Server] = []
        failed: OSError | None = None
        for host in hosts:
            try:
                server = await asyncio.start_server(accepted, host, port)
            except OSError as exc:
                failed = failed or exc
                continue
            servers.append(server)
            port = port or int(server.sockets[0].getsockname()[1])
        if not servers:
            assert failed is not None
            raise failed
        return cls(servers, port, on_close)

    def get_port(self) -> int:
        return self._port

    def close(self) -> None:
        for server in self._servers:
            server.close()
        self._on_close()

    async def wait_closed(self) -> None:
        for server in self._servers:
            await server.wait_closed()


class Forwarding:
    """The forwards of one user connection."""

    def __init__(
        self,
        conn: asyncssh.SSHServerConnection,
        audit: tuple[Budgets, events.EventSink],
        who: dict[str, str],
        spawn: Spawn,
        *,
        account: Account,
        max_forwards: int = MAX_FORWARDS,
        guard: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._guard = guard  # the node's policy: a lock or an expiry refuses what is new
        self._who = who  # user, login, connection id
        self.audit = audit[0].session(audit[1], who, self.stop)  # its budget: the connection's
        self._spawn = spawn
        self._account = account  # the login: what it may listen on, connect to, bind
        self._max_forwards = max_forwards
        self._open: set[asyncssh.SSHTCPChannel[bytes] | asyncssh.SSHUNIXChannel[bytes]] = set()
        self._relays: set[asyncio.StreamWriter] = set()
        self._listeners: set[RemoteListener] = set()
        self.stopped = False  # over its audit budget: nothing more is forwarded

    # -- local: ``direct-tcpip`` channels (``-L``, ``-D``) ------------------------------------

    def direct(self, host: str, port: int, orig_host: str, orig_port: int) -> Any:
        """Serve one ``direct-tcpip`` channel, or refuse it (``asyncssh.ChannelOpenError``)."""
        refusal = self._refusal()
        if refusal is not None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)
        unusable = no_address(host, port)
        if unusable is not None:  # refused as sshd's "invalid port", not ending the connection
            self._event("W", forward="local", action="open", addr=f"{host}:{port}", error=unusable)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, unusable)
        chan = self._conn.create_tcp_channel()
        self._open.add(chan)
        self._spawn(self._held(chan))
        return chan, self._connect(host, port, address(orig_host, orig_port))

    async def _held(
        self, chan: asyncssh.SSHTCPChannel[bytes] | asyncssh.SSHUNIXChannel[bytes]
    ) -> None:
        try:
            await chan.wait_closed()
        finally:
            self._open.discard(chan)

    async def _connect(self, host: str, port: int, origin: str) -> Any:
        fields = {"forward": "local", "action": "open", "addr": address(host, port)}
        try:
            forwarder = await self._conn.forward_connection(host, port)
        except asyncssh.ChannelOpenError as exc:
            self._event("E", **fields, originator=origin, error=exc.reason)
            raise
        self._event("I", **fields, originator=origin)
        if self.stopped:  # this very event went over the budget
            forwarder.close()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, OVER_BUDGET)
        return forwarder

    # -- remote: ``tcpip-forward`` listeners (``-R``) ---------------------------------------

    def listen(self, host: str, port: int) -> Any:
        """A listener for ``tcpip-forward`` of ``host:port``, or False (refused)."""
        requested = address(host, port)
        refusal = (
            self._refusal()
            or no_address(host, port)
            or privileged_refusal(port, uid=self._account.uid)
        )
        if refusal is None and len(self._listeners) >= MAX_LISTENERS:
            refusal = (
                f"too many remote forwards on this connection (at most {MAX_LISTENERS}): "
                "cancel one, or open another connection"
            )
        if refusal is not None:
            logger.info("remote forward refused", extra={**self._who, "reason": refusal})
            self._event("W", forward="remote", action="listen", requested=requested, error=refusal)
            return False
        return self._listen(host, port, requested)

    async def _listen(self, host: str, port: int, requested: str) -> RemoteListener | bool:
        fields = {"forward": "remote", "action": "listen", "requested": requested}
        hosts = bind_hosts(host)
        listener: RemoteListener | None = None

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            bound = int(writer.get_extra_info("sockname")[1])
            self._spawn(self._relay(reader, writer, host, bound))

        def closed() -> None:
            if listener is not None:
                self._listeners.discard(listener)

        try:
            listener = await RemoteListener.open(hosts, port, accepted, closed)
        except OSError as exc:
            self._event("E", **fields, addr=address(hosts[0], port), error=str(exc))
            return False
        self._listeners.add(listener)
        self._event("I", **fields, addr=address(hosts[0], listener.get_port()))
        return listener

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
    ) -> None:
        """One connection a ``-R`` listener accepted, carried to the user's client."""
        peer = writer.get_extra_info("peername") or ("", 0)
        origin = address(str(peer[0]), int(peer[1]))
        fields = {"forward": "remote", "action": "accept", "addr": address(host, port)}
        refusal = self._refusal()
        if refusal is not None:
            logger.info("forwarded connection refused", extra={**self._who, "reason": refusal})
            writer.close()
            return
        self._relays.add(writer)
        try:
            try:
                theirs = await self._conn.open_connection(
                    host, port, str(peer[0]), int(peer[1]), encoding=None
                )
            except (asyncssh.Error, OSError) as exc:
                self._event("E", **fields, originator=origin, error=str(exc))
                return
            self._event("I", **fields, originator=origin)
            if not self.stopped:
                await relay((reader, writer), theirs)
            theirs[1].close()
        finally:
            self._relays.discard(writer)
            writer.close()

    # -- Unix sockets, as the login (``streamlocal``) ----------------------------------------

    def direct_unix(self, path: str) -> Any:
        """Serve one ``direct-streamlocal@openssh.com`` channel, or refuse it."""
        refusal = self._refusal()
        if refusal is not None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)
        chan = self._conn.create_unix_channel()
        self._open.add(chan)
        self._spawn(self._held(chan))

        async def serve(reader: Any, writer: Any) -> None:
            fields = {"forward": "local", "action": "open", "addr": path}
            try:
                sock = await streamlocal.as_login("connect", path, self._account)
            except OSError as exc:
                self._event("E", **fields, error=str(exc))
                writer.close()
                return
            self._event("I", **fields)
            theirs = await asyncio.open_unix_connection(sock=sock)
            await relay((reader, writer), theirs)

        return chan, serve

    def listen_unix(self, path: str) -> Any:
        """A listener for ``streamlocal-forward@openssh.com`` at ``path``, or False."""
        refusal = self._refusal()
        if refusal is None and len(self._listeners) >= MAX_LISTENERS:
            refusal = f"too many remote forwards on this connection (at most {MAX_LISTENERS})"
        if refusal is not None:
            self._event("W", forward="remote", action="listen", requested=path, error=refusal)
            return False
        return self._listen_unix(path)

    async def _listen_unix(self, path: str) -> RemoteListener | bool:
        fields = {"forward": "remote", "action": "listen", "addr": path}
        listener: RemoteListener | None = None

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._spawn(self._relay_unix(reader, writer, path))

        def closed() -> None:
            if listener is not None:
                self._listeners.discard(listener)

        try:
            sock = await streamlocal.as_login("bind", path, self._account)
            server = await asyncio.start_unix_server(accepted, sock=sock)
        except OSError as exc:
            self._event("E", **fields, error=str(exc))
            return False
        listener = RemoteListener([server], 0, closed)
        self._listeners.add(listener)
        self._event("I", **fields)
        return listener

    async def _relay_unix(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
    ) -> None:
        refusal = self._refusal()
        if refusal is not None:
            writer.close()
            return
        self._relays.add(writer)
        try:
            theirs = await self._conn.open_unix_connection(path, encoding=None)
            self._event("I", forward="remote", action="accept", addr=path)
            await relay((reader, writer), theirs)
        except (asyncssh.Error, OSError) as exc:
            self._event("E", forward="remote", action="accept", addr=path, error=str(exc))
        finally:
            self._relays.discard(writer)
            writer.close()

    # -- limits, audit, the end --------------------------------------------------------------

    def _refusal(self) -> str | None:
        if (refused := self._guard()) is not None:
            return refused
        if self.stopped:
            return OVER_BUDGET
        if len(self._open) + len(self._relays) >= self._max_forwards:
            return (
                f"too many forwarded connections on this connection (at most "
                f"{self._max_forwards} open at once): close some, or open another connection"
            )
        return None

    def _event(self, outcome: str, **fields: Any) -> None:
        self.audit.put(events.event(EventType.PORT, outcome=outcome, **self._who, **fields))

    def stop(self, reason: str) -> None:
        """Forward nothing more (the audit budget ran out): close what is open."""
        self.stopped = True
        logger.warning("port forwarding stopped", extra={**self._who, "reason": reason})
        self.close()

    def close(self) -> None:
        """Close every forwarded connection and listener of the connection."""
        for listener in list(self._listeners):
            listener.close()
        for chan in list(self._open):
            with contextlib.suppress(Exception):
                chan.close()
        for writer in list(self._relays):
            writer.close()


async def relay(one: tuple[Any, Any], other: tuple[Any, Any]) -> None:
    """Carry bytes both ways between two (reader, writer) pairs until both ends sent EOF (or
    failed); both writers are closed after."""
    try:
        async with asyncio.TaskGroup() as both:
            both.create_task(_pipe(one[0], other[1]))
            both.create_task(_pipe(other[0], one[1]))
    finally:
        for writer in (one[1], other[1]):
            with contextlib.suppress(Exception):
                writer.close()


async def _pipe(reader: Any, writer: Any) -> None:
    """Copy ``reader`` to ``writer`` until its EOF, then pass the EOF on."""
    with contextlib.suppress(OSError, asyncssh.Error):
        while data := await reader.read(RELAY_BYTES):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

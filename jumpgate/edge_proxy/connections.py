"""Bounds on the proxy's connections: how many one source address may hold, and how long a
connection may take to say who it is (decision 0019).

Each listener (web 3080, users' SSH 3023, node tunnels 3024) has a ``SourceGate``: a
connection is admitted at accept, before any TLS or SSH work, unless its source address
already holds ``max_per_source`` connections there, or ``max_unauthenticated_per_source``
that have not yet got past their handshake (an HTTPS request head, an SSH login), or the
listener already holds ``max_unauthenticated`` such connections from all sources together. A
refused connection is closed at once, logged and counted; nothing else is spent on it. This
is OpenSSH's ``MaxStartups`` and Teleport's ``connection_limits.max_connections``. A source is
an IPv4 address, or an IPv6 /64 (one host is routinely given a whole /64, so counting per
/128 would give it 2**64 quotas); an IPv4-mapped IPv6 address counts as its IPv4 address.

``ChannelSlots`` caps the channels one user connection holds open at once (sessions, and
forwarded ``direct-tcpip`` channels), as OpenSSH's ``MaxSessions``: each one spliced to a
node costs the node a connection.

The HTTPS front also gets the deadlines aiohttp lacks: ``BoundedHTTPS`` accepts plain TCP,
runs the TLS handshake itself under ``tls_handshake_timeout``, and cuts a connection that has
not sent a complete request head within ``header_timeout`` of its start, however slowly it
trickles; between requests aiohttp's keep-alive timeout (``idle_timeout``) applies, and the
web front's middleware gives a request's body ``body_timeout``.
"""

import asyncio
import ipaddress
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """What the proxy's listeners allow one source address, and how long a handshake may take."""

    max_per_source: int = 4096  # live connections one address may hold on one listener
    max_unauthenticated_per_source: int = 512  # of those, still in TLS/SSH handshake or login
    header_timeout: float = 10.0  # seconds an HTTPS client has to send a complete request head
    body_timeout: float = 20.0  # seconds an HTTPS client has to send a request's body
    idle_timeout: float = 20.0  # seconds an HTTPS keep-alive connection may wait between requests
    tls_handshake_timeout: float = 10.0  # seconds for the HTTPS TLS handshake
    login_grace: float = 30.0  # seconds an SSH client has to authenticate (LoginGraceTime)
    max_unauthenticated: int = 2048  # handshakes one listener holds from all sources together
    max_sessions_per_connection: int = 10  # session channels open at once on one user connection
    max_forwards_per_connection: int = 64  # direct-tcpip channels open at once on one connection

    def __post_init__(self) -> None:
        caps = (
            self.max_per_source,
            self.max_unauthenticated_per_source,
            self.max_unauthenticated,
            self.max_sessions_per_connection,
            self.max_forwards_per_connection,
        )
        if min(caps) < 1:
            raise ValueError("connection caps must be at least 1")
        timeouts = (self.header_timeout, self.body_timeout, self.idle_timeout)
        if min(*timeouts, self.tls_handshake_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.login_grace <= 0:
            raise ValueError("the login grace time must be positive")


def source_key(peer: Any) -> str:
    """Which source ``peer`` (a socket address) counts as: an IPv4 address, or an IPv6 /64
    (an IPv4-mapped IPv6 address is its IPv4 address)."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        bare = ipaddress.IPv6Address(int(address))  # no scope id: fe80::1%eth0 is fe80::/64
        return str(ipaddress.IPv6Network((bare, 64), strict=False))
    return str(address)


@dataclass
class LogThrottle:
    """At most one line a second for one kind of refusal: an attacker's flood of refused
    connections or channels must not become a flood of log lines (the counters count all)."""

    every: float = 1.0  # seconds between lines
    _next: float = 0.0
    _unlogged: int = 0

    def due(self) -> int | None:
        """The refusals not logged since the last line, if a line is due now; else ``None``."""
        now = time.monotonic()
        if now < self._next:
            self._unlogged += 1
            return None
        self._next = now + self.every
        unlogged, self._unlogged = self._unlogged, 0
        return unlogged


_CHANNEL_REFUSALS = LogThrottle()  # all connections' channel refusals, one line a second


@dataclass
class Admission:
    """One admitted connection's place in its gate: unauthenticated until ``authenticated``,
    given back by ``release`` (both idempotent)."""

    gate: "SourceGate"
    source: str
    proven: bool = False
    released: bool = False

    def authenticated(self) -> None:
        """The connection got past its handshake: it counts only against the total now."""
        if not self.proven and not self.released:
            self.proven = True
            self.gate.unauthenticated[self.source] -= 1
            self.gate.unauthenticated_total -= 1

    def release(self) -> None:
        """The connection is gone."""
        if self.released:
            return
        self.released = True
        gate = self.gate
        if not self.proven:
            gate.unauthenticated[self.source] -= 1
            gate.unauthenticated_total -= 1
        gate.live[self.source] -= 1
        for counter in (gate.live, gate.unauthenticated):
            if counter[self.source] <= 0:
                del counter[self.source]


@dataclass
class SourceGate:
    """Counts one listener's connections per source, and its handshakes in all, and refuses
    those over the caps."""

    listener: str  # web | ssh | tunnel: the metric label and what the log line names
    limits: ConnectionLimits
    refused: Counter[str]  # refusals by listener, shared by the proxy's gates for /metrics
    live: Counter[str] = field(default_factory=Counter)
    unauthenticated: Counter[str] = field(default_factory=Counter)
    unauthenticated_total: int = 0  # handshakes in progress, all sources
    throttle: LogThrottle = field(default_factory=LogThrottle)

    def admit(self, peer: Any) -> Admission | None:
        """An admission for a connection from ``peer`` (a socket address), or ``None`` (and
        a log line) when its source, or the listener, is over a cap."""
        source = source_key(peer)
        limits = self.limits
        if self.unauthenticated_total >= limits.max_unauthenticated:
            why = "connection refused: too many unauthenticated connections on this listener"
        elif (
            self.live[source] >= limits.max_per_source
            or self.unauthenticated[source] >= limits.max_unauthenticated_per_source
        ):
            why = "connection refused: too many from one source"
        else:
            self.live[source] += 1
            self.unauthenticated[source] += 1
            self.unauthenticated_total += 1
            return Admission(self, source)
        self.refused[self.listener] += 1
        unlogged = self.throttle.due()
        if unlogged is not None:
            logger.warning(
                why,
                extra={
                    "listener": self.listener,
                    "source": source,
                    "live": self.live[source],
                    "unauthenticated": self.unauthenticated[source],
                    "unauthenticated_total": self.unauthenticated_total,
                    "refused_unlogged": unlogged,  # since the last line (one a second at most)
                },
            )
        return None


@dataclass
class ChannelSlots:
    """The channels of one kind open at once on one SSH connection, capped (``MaxSessions``).

    ``take`` claims a slot when a channel is asked for, before any work is done for it, and
    raises the SSH open failure the client is shown when none is free; the slot comes back
    by the returned callable (idempotent), when the channel closes or its opening fails.
    """

    kind: str  # sessions | forwarded channels: what the refusal names
    limit: int  # how many may be open at once
    held: int = 0

    def take(self) -> Callable[[], None]:
        if self.held >= self.limit:
            unlogged = _CHANNEL_REFUSALS.due()
            if unlogged is not None:
                logger.info(
                    "channel refused: too many on one connection",
                    extra={"kind": self.kind, "limit": self.limit, "refused_unlogged": unlogged},
                )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"too many {self.kind} on this connection (at most {self.limit} open at once):"
                " close one, or open another connection",
            )
        self.held += 1
        given: list[bool] = []

        def give_back() -> None:
            if not given:
                given.append(True)
                self.held -= 1

        return give_back


S = TypeVar("S", bound=asyncssh.SSHServer)


def gated(factory: Callable[[], S], gate: SourceGate) -> Callable[[], S]:
    """An asyncssh ``server_factory`` whose servers are counted by ``gate``.

    asyncssh has no accept hook, and the server objects must stay the proxy's own classes
    (routing finds them with ``get_owner``), so the three callbacks that mark a connection's
    life are wrapped on each instance: ``connection_made`` admits or aborts it before the
    SSH version is sent, ``auth_completed`` marks it authenticated, ``connection_lost``
    releases it.
    """

    def make() -> S:
        server = factory()
        made, completed, lost = (
            server.connection_made,
            server.auth_completed,
            server.connection_lost,
        )
        admission: list[Admission] = []

        def connection_made(conn: asyncssh.SSHServerConnection) -> None:
            admitted = gate.admit(conn.get_extra_info("peername"))
            if admitted is None:
                conn.abort()
                return
            admission.append(admitted)
            made(conn)

        def auth_completed() -> None:
            for admitted in admission:
                admitted.authenticated()
            completed()

        def connection_lost(exc: Exception | None) -> None:
            for admitted in admission:
                admitted.release()
            if admission:
                lost(exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.auth_completed = auth_completed  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        return server

    return make


class _Deadline:
    """A call to ``expire`` at a time, which can be moved or disarmed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._handle = self._loop.call_later(seconds, self._expire)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _GuardedConnection(asyncio.Protocol):
    """One HTTPS connection: admitted at accept, TLS under a deadline, then aiohttp's protocol
    behind it with a header deadline running until ``request_started``.

    It is the raw socket's protocol until ``start_tls`` takes the socket over, then the TLS
    layer's application protocol, passing everything on to aiohttp's; its
    ``connection_lost`` gives the connection's place back whichever way it ends.
    """

    def __init__(self, front: "BoundedHTTPS") -> None:
        self._front = front
        self._admission: Admission | None = None
        self._tls: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._deadline: _Deadline | None = None
        self._task: asyncio.Task[None] | None = None
        self._early: list[bytes] = []  # what arrived with the handshake's last flight
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._admission = self._front.gate.admit(transport.get_extra_info("peername"))
        if self._admission is None:
            transport.abort()
            return
        transport.pause_reading()  # the ClientHello stays queued for the TLS layer
        self._task = asyncio.get_running_loop().create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        front = self._front
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                raw,
                self,
                front.context,
                server_side=True,
                ssl_handshake_timeout=front.limits.tls_handshake_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError):
            tls = None
        if tls is None or tls.is_closing():  # failed, too slow, or the peer went away
            raw.abort()
            self._release()
            return
        self._tls = tls
        front.guards[tls] = self
        self._deadline = _Deadline(loop, self._expired)
        self._deadline.arm(front.limits.header_timeout)
        inner = self._inner = front.protocol_factory()
        inner.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            inner.data_received(data)
        if self._early_eof and not inner.eof_received():
            tls.close()

    def data_received(self, data: bytes) -> None:
        # A TLS 1.3 client sends its request with its Finished message: the TLS layer hands
        # it over before ``start_tls`` has returned here.
        if self._inner is not None:
            self._inner.data_received(data)
        else:
            self._early.append(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = True
            return True
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._release()
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.connection_lost(exc)

    def request_started(self) -> None:
        """aiohttp has a request head from this connection."""
        if self._deadline is not None:
            self._deadline.disarm()
        if self._admission is not None:
            self._admission.authenticated()

    def _expired(self) -> None:
        logger.info(
            "https connection cut: no complete request head in time",
            extra={"source": self._admission.source if self._admission else ""},
        )
        self._front.header_timeouts += 1
        if self._tls is not None:
            self._tls.abort()

    def _release(self) -> None:
        if self._deadline is not None:
            self._deadline.disarm()
        if self._tls is not None:
            self._front.guards.pop(self._tls, None)
        if self._admission is not None:
            self._admission.release()


class BoundedHTTPS:
    """Serves aiohttp's protocol (``protocol_factory``) over TLS, with per-source caps and
    handshake and header deadlines; ``request_started`` is aiohttp's hook back in."""

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.Protocol],
        context: ssl.SSLContext,
        limits: ConnectionLimits,
        refused: Counter[str],
    ) -> None:
        self.protocol_factory = protocol_factory
        self.context = context
        self.limits = limits
        self.gate = SourceGate("web", limits, refused)
        self.guards: dict[asyncio.BaseTransport, _GuardedConnection] = {}
        self.header_timeouts = 0

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A request head arrived on ``transport``: its header deadline is met."""
        guard = self.guards.get(transport) if transport is not None else None
        if guard is not None:
            guard.request_started()


class BoundedSite(web.BaseSite):
    """An aiohttp site listening on plain TCP with ``BoundedHTTPS`` (which does the TLS)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, https: BoundedHTTPS, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._https = host, port, https

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._https, self._host, self._port, backlog=self._backlog
        )


class MalformedRequests(logging.Filter):
    """Turns aiohttp's report of a request it could not parse (an ERROR with a 900-byte
    traceback, once per request: a cheap way to flood the log) into one short info line.

    A bad request is the client's fault and is answered 400; an operator needs to know it
    happened, and from where, not aiohttp's stack. Other reports (a handler's real error)
    pass unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            said = str(exc.message).strip().splitlines()
            record.msg = "malformed http request: %s"
            record.args = ((said[0] if said else type(exc).__name__)[:120],)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def http_logger() -> logging.Logger:
    """The logger for the web front's aiohttp protocol (its ``logger``), with malformed
    requests told in one line."""
    http = logging.getLogger(f"{__name__}.http")
    if not any(isinstance(each, MalformedRequests) for each in http.filters):
        http.addFilter(MalformedRequests())
    return http

"""Deadlines on the proxy's HTTPS connections, which aiohttp lacks (decision 0019).

``BoundedHTTPS`` accepts plain TCP, admits the connection at its listener's ``SourceGate``
(``connections``), runs the TLS handshake itself under ``tls_handshake_timeout``, and cuts a
connection that has not sent a complete request head within ``header_timeout`` of its start,
however slowly it trickles; between requests aiohttp's keep-alive timeout (``idle_timeout``)
applies, and the web front's middleware gives a request's body ``body_timeout``.
"""

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from jumpgate.edge_proxy.connections import Admission, ConnectionLimits, SourceGate

logger = logging.getLogger(__name__)


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
        self._raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        self._admission = self._front.gate.admit(transport.get_extra_info("peername"), self._cut)
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

    def _cut(self) -> None:
        """The gate dropped this connection (still in its handshake) to make room."""
        transport = self._tls or self._raw
        if transport is not None:
            transport.abort()

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

"""Dial-back data connections: a session's bytes on a TCP connection of their own.

Inside the tunnel every byte of a session would be decrypted and encrypted once more by the
proxy and the agent, on top of the user's own end-to-end SSH session. Instead, for each new
session the proxy asks the agent over the tunnel (a short-lived channel to its ``DIALBACK``
port) to dial a data connection back to the proxy, and to present a one-time token on it.
The agent then serves SSH directly on that socket, and the proxy splices it onto the user's
channel: as an OpenSSH jump host does, the hop between proxy and node carries the user's
SSH session as it is, already encrypted end to end and authenticated by the node's host
certificate. The node still dials out only; nothing listens on it.

A token is 128 random bits, sent only inside the tunnel, good once and for a few seconds, and
bound to the splice that asked for it. If anything fails, the session goes through the
tunnel as before. See docs/decisions/0008.

The data port is open to anyone who can reach the tunnel address, so it is bounded as the
other listeners are (decision 0019): a ``SourceGate`` admits a connection at accept unless its
source already holds ``max_unauthenticated_per_source`` greetings (or the port
``max_unauthenticated`` in all), and a greeting not finished within ``WAIT_SECONDS`` is cut.
A connection that presents a good token leaves the gate: it is a session then, bounded by
the caps on the user's side.
"""

import asyncio
import contextlib
import json
import logging
import secrets
from collections import Counter

import asyncssh

from jumpgate.edge_proxy.connections import Admission, ConnectionLimits, SourceGate
from jumpgate.edge_proxy.registry import Tunnel
from jumpgate.edge_proxy.splice import SocketSide, Splice
from jumpgate.protocol import ports
from jumpgate.protocol.tunnel import DATA_HELLO
from jumpgate.protocol.tunnel_messages import SessionOrigin

logger = logging.getLogger(__name__)

WAIT_SECONDS = 5.0
MAX_GREETING = 64


class DialBack:
    """The proxy's data listener and the sessions waiting for their node to dial in."""

    def __init__(
        self, limits: ConnectionLimits | None = None, refused: Counter[str] | None = None
    ) -> None:
        self.gate = SourceGate(
            "dialback", limits or ConnectionLimits(), Counter() if refused is None else refused
        )
        self.port = 0
        self._waiting: dict[str, tuple[Splice, asyncio.Future[None]]] = {}
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Greeting(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def connect(
        self, tunnel: Tunnel, splice: Splice, origin: SessionOrigin | None = None
    ) -> bool:
        """Have the node dial ``splice``'s node side; False (and nothing attached) if it did not."""
        token = secrets.token_hex(16)
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (splice, arrived)
        try:
            reader, writer = await tunnel.connection.open_connection(
                tunnel.listen_host,
                ports.DIALBACK,
                *(origin.originator() if origin is not None else ()),
            )
            writer.write(json.dumps({"port": self.port, "token": token}).encode() + b"\n")
            reply = await asyncio.wait_for(reader.readline(), WAIT_SECONDS)
            writer.close()
            if reply.strip() != b"ok":
                logger.info(
                    "dial-back refused", extra={"node": tunnel.host_id, "reply": reply[:200]}
                )
                return False
            await asyncio.wait_for(asyncio.shield(arrived), WAIT_SECONDS)
            return True
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            logger.info("dial-back failed", extra={"node": tunnel.host_id, "reason": str(exc)})
            return False
        finally:
            self._waiting.pop(token, None)

    def claim(self, token: str) -> tuple[Splice, asyncio.Future[None]] | None:
        return self._waiting.pop(token, None)


class _Greeting(asyncio.Protocol):
    """A new data connection until its token is read; then a splice's ``SocketSide``."""

    def __init__(self, dialback: DialBack) -> None:
        self._dialback = dialback
        self._buffer = b""
        self._transport: asyncio.Transport
        self._admission: Admission | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._admission = self._dialback.gate.admit(transport.get_extra_info("peername"))
        if self._admission is None:
            transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(WAIT_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        line, newline, rest = self._buffer.partition(b"\n")
        if not newline:
            if len(self._buffer) > MAX_GREETING:
                self._transport.close()
            return
        self._timer.cancel()
        token = line.removeprefix(DATA_HELLO).decode(errors="replace")
        entry = self._dialback.claim(token) if line.startswith(DATA_HELLO) else None
        if entry is None:
            self._transport.close()
            return
        splice, arrived = entry
        if self._admission is not None:
            self._admission.release()  # a session now, no longer a greeting
        side = SocketSide(splice)
        side.transport = self._transport
        self._transport.set_protocol(side)
        splice.attach(side)
        side.started()
        if rest:
            side.data_received(rest)
        arrived.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admission is not None:
            self._admission.release()
        with contextlib.suppress(AttributeError):
            self._timer.cancel()

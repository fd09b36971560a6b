"""Dial-back data connections (decision 0008): the proxy asks, the agent dials and serves SSH.

The proxy's request arrives on a forwarded channel to ``ports.DIALBACK`` inside the tunnel
(``tunnel_messages.DialBackRequest``); the agent connects to the proxy's address it already
knows, sends the ``DataHello`` line with the token, answers ``ok`` on the request's channel
(or ``error ...``) and serves SSH on that socket. See edge_proxy.dialback.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncssh

from jumpgate.protocol.names import resolve_loopback
from jumpgate.protocol.tunnel_messages import (
    DataHello,
    DialBackRequest,
    MessageError,
    SessionOrigin,
)

logger = logging.getLogger(__name__)

REQUEST_SECONDS = 10.0
"""How long the agent waits for the request line on a dial-back channel."""

Spawn = Callable[[Coroutine[Any, Any, object]], None]


def handler(
    host: str, serving: dict[str, Any], spawn: Spawn
) -> Callable[[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]], Awaitable[None]]:
    """The handler of one dial-back request to the proxy at ``host``; the SSH connection
    it starts lives on by itself (``spawn``)."""

    async def handle(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_SECONDS)
            request = DialBackRequest.decode(line)
            # the session's origin, in the request channel's originator fields (0030)
            peer = writer.get_extra_info("remote_peername") or ("", 0)
            told = SessionOrigin.from_originator(*peer)
            sock = await dial(resolve_loopback(host), request.port)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, DataHello(token=request.token).line())
            spawn(serve(sock, serving, told))
            writer.write(b"ok\n")
        except (OSError, MessageError, TimeoutError) as exc:
            logger.info("dial-back failed", extra={"reason": str(exc)})
            writer.write(f"error {exc}\n".encode()[:200])
        finally:
            writer.close()

    return handle


async def dial(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``, within a few seconds."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), 3)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    sock: socket.socket, serving: dict[str, Any], told: SessionOrigin | None = None
) -> None:
    """SSH on a dialled-back socket; the connection then lives on by itself. Its server
    (``serving["server_factory"]``, given ``told``) knows the session's origin."""
    factory = serving["server_factory"]
    try:
        await asyncssh.run_server(sock, **{**serving, "server_factory": lambda: factory(told)})
    except (OSError, asyncssh.Error) as exc:
        logger.info("dial-back session failed", extra={"reason": str(exc)})

"""Dial-back data connections on 127.0.0.1, with a real asyncssh tunnel between the two ends.

The proxy end is ``DialBack``; the agent end here answers requests as a test would need
(dial with the token, refuse, or stay silent). The agent's own handler is exercised end to
end in tests/e2e (the proxy's metrics count dial-back sessions).
"""

import asyncio
import json
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest

from jumpgate.edge_proxy import dialback
from jumpgate.edge_proxy.dialback import DialBack
from jumpgate.edge_proxy.registry import Tunnel
from jumpgate.edge_proxy.splice import SocketSide, Splice
from jumpgate.edge_proxy.tunnel_front import TunnelListener
from jumpgate.protocol import ports
from jumpgate.protocol.tunnel import DATA_HELLO, LISTEN_HOST

pytestmark = pytest.mark.net
Handler = Callable[[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]], Awaitable[None]]


class _Proxy(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> TunnelListener:
        return TunnelListener(listen_port)


async def _with_tunnel(agent: Handler, body: Callable[[Tunnel], Awaitable[Any]]) -> Any:
    """A tunnel whose agent answers dial-back requests with ``agent``; ``body`` uses it."""
    server_conn: asyncio.Future[asyncssh.SSHServerConnection] = asyncio.Future()

    class Proxy(_Proxy):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            server_conn.set_result(conn)

    key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=Proxy, server_host_keys=[key], encoding=None
    )
    port = acceptor.sockets[0].getsockname()[1]
    async with asyncssh.connect(
        "127.0.0.1", port, known_hosts=None, username="node", config=[], agent_path=None
    ) as conn:
        await conn.start_server(lambda *_: agent, LISTEN_HOST, ports.DIALBACK, encoding=None)
        tunnel = Tunnel(
            "acme", "id-1", "web-1", await server_conn, LISTEN_HOST, ports.NODE_SSH, "k"
        )
        try:
            return await body(tunnel)
        finally:
            acceptor.close()


def _dialing(token_of: Callable[[str], str]) -> Handler:
    """An agent that dials the data port and presents ``token_of(token)``."""

    async def handle(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        request = json.loads(await reader.readline())
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", request["port"]))
        sock.sendall(DATA_HELLO + token_of(request["token"]).encode() + b"\nSSH-2.0-x\r\n")
        sock.setblocking(False)
        handle.sock = sock  # type: ignore[attr-defined]
        writer.write(b"ok\n")
        writer.close()
        await loop.sock_recv(sock, 0)

    return handle


async def _falls_back(tunnel: Tunnel) -> None:
    """Asking ``tunnel``'s agent to dial back fails, and leaves the splice without a node."""
    back = DialBack()
    await back.start("127.0.0.1", 0)
    splice = Splice()
    assert await back.connect(tunnel, splice) is False
    assert splice.node is None
    back.close()


def test_a_dialled_back_connection_becomes_the_node_side() -> None:
    agent = _dialing(lambda token: token)

    async def body(tunnel: Tunnel) -> None:
        back = DialBack()
        await back.start("127.0.0.1", 0)
        splice = Splice()
        assert await back.connect(tunnel, splice) is True
        assert isinstance(splice.node, SocketSide)
        assert splice.node.ready
        assert back.claim("anything") is None
        splice.node.finish()
        agent.sock.close()  # type: ignore[attr-defined]
        back.close()

    asyncio.run(_with_tunnel(agent, body))


def test_a_wrong_token_gets_nothing_and_the_session_falls_back() -> None:
    agent = _dialing(lambda token: token[::-1])

    async def body(tunnel: Tunnel) -> None:
        await _falls_back(tunnel)
        sock: socket.socket = agent.sock  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(sock, 10), 5) == b""  # closed on us
        sock.close()

    dialback.WAIT_SECONDS = 1.0
    try:
        asyncio.run(_with_tunnel(agent, body))
    finally:
        dialback.WAIT_SECONDS = 5.0


def test_an_agent_that_refuses_leaves_the_session_to_the_tunnel() -> None:
    async def refuse(reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
        await reader.readline()
        writer.write(b"error cannot reach the proxy\n")
        writer.close()

    asyncio.run(_with_tunnel(refuse, _falls_back))


@pytest.mark.parametrize(
    "greeting",
    [b"JGDATA nosuchtoken\n", b"GET / HTTP/1.1\r\n\r\n", b"x" * 100],
    ids=["unknown-token", "not-a-greeting", "no-newline"],
)
def test_strangers_on_the_data_port_are_closed(greeting: bytes) -> None:
    async def main() -> None:
        back = DialBack()
        port = await back.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(greeting)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        back.close()

    asyncio.run(main())


def _hold(port: int, count: int, source: str) -> list[socket.socket]:
    """``count`` data connections from ``source`` that start a greeting and stop there."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        sock.sendall(DATA_HELLO)
        held.append(sock)
    return held


def _closed(sock: socket.socket, seconds: float) -> bool:
    poll = select.poll()  # select() takes no descriptor past 1023
    poll.register(sock, select.POLLIN)
    if not poll.poll(seconds * 1000):
        return False
    try:
        return sock.recv(16, socket.MSG_PEEK) == b""
    except ConnectionResetError:  # aborted at accept
        return True


def test_one_source_holds_at_most_its_share_of_greetings() -> None:
    """Finding 12: one address held 1,600 unauthenticated data connections at once; the data
    port now admits at most ``max_unauthenticated_per_source`` (512) greetings from a source,
    as the other listeners do, and another source still gets in."""

    async def main() -> None:
        back = DialBack()
        port = await back.start("127.0.0.1", 0)
        held = await asyncio.to_thread(_hold, port, 600, "127.0.0.1")
        other = await asyncio.to_thread(_hold, port, 1, "127.0.0.2")
        try:
            await asyncio.sleep(0.5)
            shut = await asyncio.to_thread(lambda: [_closed(s, 0.01) for s in held])
            assert shut.count(False) == 512, shut.count(False)
            assert not await asyncio.to_thread(_closed, other[0], 0.3)
            assert back.gate.refused["dialback"] == 88
        finally:
            for sock in held + other:
                sock.close()
            back.close()
        await asyncio.sleep(0.2)
        assert not back.gate.live
        assert not back.gate.unauthenticated_total

    dialback.WAIT_SECONDS = 30.0  # the deadline is not what this test is about
    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        dialback.WAIT_SECONDS = 5.0


def test_a_greeting_that_never_ends_is_cut_at_its_deadline() -> None:
    async def main() -> None:
        back = DialBack()
        port = await back.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(DATA_HELLO)
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started < 2.5
        writer.close()
        await asyncio.sleep(0.1)
        assert not back.gate.live, "the slot was not given back"
        back.close()

    dialback.WAIT_SECONDS = 1.0
    try:
        asyncio.run(main())
    finally:
        dialback.WAIT_SECONDS = 5.0

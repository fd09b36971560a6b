"""How a node learns a session's origin from its proxy (decision 0030), on 127.0.0.1 with a
real asyncssh tunnel: the proxy's end is the real ``DialBack`` and the tunnel channel the
real ``NodeLink`` opens; the agent's end is its real dial-back handler and ``origin``."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest

from jumpgate.edge_proxy.dialback import DialBack
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_link import NodeLink
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.edge_proxy.splice import Splice
from jumpgate.edge_proxy.tunnel_front import TunnelListener
from jumpgate.node_agent import dial_back, origin
from jumpgate.protocol import ports
from jumpgate.protocol.tunnel import LISTEN_HOST
from jumpgate.protocol.tunnel_messages import SessionOrigin

pytestmark = pytest.mark.net

SESSION = str(uuid.uuid4())
TOLD = SessionOrigin(session_id=SESSION, addr="203.0.113.9", port=40022)


class _Proxy(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> TunnelListener:
        return TunnelListener(listen_port)


class _Node(asyncssh.SSHServer):
    """The node's server as far as origins go: it records the connection's, as
    ``NodeServer`` does, and hands the connection to the test."""

    def __init__(self, seen: "asyncio.Queue[Any]", told: SessionOrigin | None = None) -> None:
        self._seen = seen
        self._told = told

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        origin.record(conn, self._told)
        self._seen.put_nowait(conn)


async def _tunnel(
    body: Callable[[Tunnel, "asyncio.Queue[Any]"], Awaitable[None]], *, dialback: bool
) -> None:
    """A proxy and an agent joined by a tunnel; the agent serves ``_Node`` in it (and takes
    dial-back requests with its own handler when ``dialback``)."""
    server_conn: asyncio.Future[asyncssh.SSHServerConnection] = asyncio.Future()
    seen: asyncio.Queue[Any] = asyncio.Queue()

    class Proxy(_Proxy):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            server_conn.set_result(conn)

    key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=Proxy, server_host_keys=[key], encoding=None
    )
    port = acceptor.sockets[0].getsockname()[1]
    serving: dict[str, Any] = {
        "server_factory": lambda told=None: _Node(seen, told),
        "server_host_keys": [key],
        "encoding": None,
    }
    spawned: set[asyncio.Task[object]] = set()

    def spawn(coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        spawned.add(task)

    async with asyncssh.connect(
        "127.0.0.1", port, known_hosts=None, username="node", config=[], agent_path=None
    ) as conn:
        await asyncssh.listen(tunnel=conn, host=LISTEN_HOST, port=ports.NODE_SSH, **serving)
        if dialback:
            await conn.start_server(
                lambda *_: dial_back.handler("127.0.0.1", serving, spawn),
                LISTEN_HOST,
                ports.DIALBACK,
                encoding=None,
            )
        tunnel = Tunnel(
            "acme", "id-1", "web-1", await server_conn, LISTEN_HOST, ports.NODE_SSH, "k", dialback
        )
        try:
            await body(tunnel, seen)
        finally:
            acceptor.close()
            for task in spawned:
                task.cancel()


async def _close(conn: asyncssh.SSHServerConnection, splice: Splice) -> None:
    """End the node's connection, then the proxy's splice, leaving no socket open."""
    conn.close()
    await conn.wait_closed()
    if splice.node is not None:
        splice.node.abort()  # no user side here: close the node's
    await asyncio.sleep(0.05)  # the transports' own closing callbacks


async def _opened(tunnel: Tunnel, told: SessionOrigin | None) -> Splice:
    back = DialBack()
    await back.start("127.0.0.1", 0)
    link = NodeLink(TunnelRegistry(), back, Metrics(), "proxy-1")
    splice = Splice()
    await link.reach(tunnel, splice, told)
    back.close()
    return splice


@pytest.mark.parametrize("dialback", [True, False], ids=["dial-back", "tunnel-channel"])
def test_the_node_learns_the_session_id_and_the_users_address(dialback: bool) -> None:
    async def body(tunnel: Tunnel, seen: "asyncio.Queue[Any]") -> None:
        splice = await _opened(tunnel, TOLD)
        conn = await asyncio.wait_for(seen.get(), 10)
        assert origin.origin(conn) == origin.Origin("203.0.113.9", 40022, SESSION)
        # the first session channel takes the proxy's id; a later one (ControlMaster) its own
        assert origin.session_ids(conn) == {"session_id": SESSION}
        later = origin.session_ids(conn)
        assert later["proxy_session_id"] == SESSION
        assert later["session_id"] not in (SESSION, "")
        await _close(conn, splice)

    asyncio.run(_tunnel(body, dialback=dialback))


@pytest.mark.parametrize("dialback", [True, False], ids=["dial-back", "tunnel-channel"])
def test_a_proxy_that_says_nothing_leaves_the_session_its_own_id(dialback: bool) -> None:
    async def body(tunnel: Tunnel, seen: "asyncio.Queue[Any]") -> None:
        splice = await _opened(tunnel, None)
        conn = await asyncio.wait_for(seen.get(), 10)
        assert origin.origin(conn) == origin.UNKNOWN
        ids = origin.session_ids(conn)
        assert list(ids) == ["session_id"]
        assert uuid.UUID(ids["session_id"])
        await _close(conn, splice)

    asyncio.run(_tunnel(body, dialback=dialback))


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("203.0.113.9", 40022),
        (f"{SESSION}@not-an-address", 1),
        (f"{SESSION.upper()}@203.0.113.9", 1),
        (f"x{SESSION}@203.0.113.9", 1),
        (f"{SESSION}@203.0.113.9", "1"),
        (f"{SESSION}@203.0.113.9\n", 1),
    ],
    ids=["plain-address", "not-an-ip", "upper-case", "prefixed", "port-as-text", "newline"],
)
def test_originator_fields_that_are_no_origin_are_ignored(host: str, port: object) -> None:
    assert SessionOrigin.from_originator(host, port) is None
    assert SessionOrigin.from_originator(*TOLD.originator()) == TOLD

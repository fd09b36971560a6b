"""``drop_kexinits`` against a real asyncssh connection on 127.0.0.1.

Shown: once authenticated, the server's connection forgets both KEXINIT packets; a rekey
afterwards (the client rekeys every 64 KiB) still completes and the session carries every
byte, the packets being set again by that exchange. If asyncssh renames what this relies on,
the first assertion fails and the trim (``tunnel_front.TunnelServer.auth_completed``) has to
follow it or go.
"""

import asyncio

import asyncssh
import pytest

from jumpgate.protocol.kex_memory import drop_kexinits

pytestmark = pytest.mark.net

STREAM = 1024 * 1024


class _Server(asyncssh.SSHServer):
    """Asks no authentication; trims its connection's KEXINITs once authenticated."""

    def __init__(self, trimmed: list[tuple[bool, int]], conns: list[object]) -> None:
        self._trimmed = trimmed
        self._conns = conns
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._conns.append(conn)

    def begin_auth(self, username: str) -> bool:
        return False

    def auth_completed(self) -> None:
        conn: object = self._conn
        dropped = drop_kexinits(conn)
        left = len(getattr(conn, "_client_kexinit", b"x")) + len(
            getattr(conn, "_server_kexinit", b"x")
        )
        self._trimmed.append((dropped, left))


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    while chunk := await process.stdin.read(65536):
        process.stdout.write(chunk)
        await process.stdout.drain()
    process.exit(0)


async def _session() -> tuple[list[tuple[bool, int]], int, int]:
    trimmed: list[tuple[bool, int]] = []
    conns: list[object] = []
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        server_factory=lambda: _Server(trimmed, conns),
        process_factory=_echo,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            config=[],
            agent_path=None,
            rekey_bytes=64 * 1024,
        ) as conn:
            result = await conn.run(input=b"\1" * STREAM, encoding=None, check=True)
            [server_conn] = conns
            again = len(getattr(server_conn, "_client_kexinit", b""))
            return trimmed, len(result.stdout or b""), again
    finally:
        server.close()


def test_the_kexinits_are_dropped_after_auth_and_a_rekey_still_works() -> None:
    trimmed, echoed, again = asyncio.run(asyncio.wait_for(_session(), 60))
    assert trimmed == [(True, 0)], trimmed
    assert echoed == STREAM
    assert again > 0  # a rekey ran after the trim and set them again

"""asyncssh's receive window on a paused channel, with and without ``bound_receive_window``.

A real asyncssh server on 127.0.0.1 streams zeros; a client session that pauses its channel
after every packet and resumes a moment later (a slow reader) counts what its channel holds
undelivered. The window should bound that; asyncssh 2.24.1 lets it grow (decision 0019). If
the first test starts failing, asyncssh fixed it upstream and the workaround can go.
"""

import asyncio

import asyncssh
import pytest

from jumpgate.protocol.channel_window import bound_receive_window

pytestmark = pytest.mark.net

WINDOW = 128 * 1024
STREAM = 16 * 1024 * 1024


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about the channel


async def _stream(process: asyncssh.SSHServerProcess[bytes]) -> None:
    chunk = b"\0" * 32768
    for _ in range(STREAM // len(chunk)):
        process.stdout.write(chunk)
        await process.stdout.drain()
    process.exit(0)


class _SlowSession(asyncssh.SSHClientSession[bytes]):
    """Takes one packet, pauses, resumes 1 ms later; notes the most its channel held."""

    def __init__(self) -> None:
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.held = 0
        self.received = 0

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        assert self.chan is not None
        self.received += len(data)
        buffered = sum(len(chunk) for chunk, _ in self.chan._recv_buf)
        self.held = max(self.held, buffered)
        self.chan.pause_reading()
        asyncio.get_running_loop().call_later(0.001, self.chan.resume_reading)


async def _most_held(bounded: bool) -> tuple[int, int]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[key],
        server_factory=_Server,
        process_factory=_stream,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="x", known_hosts=None, client_keys=None
        ) as conn:
            chan, opened = await conn.create_session(
                _SlowSession, "stream", encoding=None, window=WINDOW
            )
            assert isinstance(opened, _SlowSession)
            session = opened
            if bounded:
                bound_receive_window(chan)
            await asyncio.wait_for(chan.wait_closed(), 60)
            return session.held, session.received
    finally:
        server.close()
        await server.wait_closed()


def test_asyncssh_lets_a_paused_channel_hold_more_than_its_window() -> None:
    held, received = asyncio.run(_most_held(bounded=False))
    assert received == STREAM
    print(f"unbounded: a paused channel held up to {held} bytes (window {WINDOW})")
    assert held > 2 * WINDOW, f"held {held} bytes: asyncssh now honours the window"


def test_bounded_channel_holds_at_most_its_window() -> None:
    held, received = asyncio.run(_most_held(bounded=True))
    assert received == STREAM
    print(f"bounded: a paused channel held up to {held} bytes (window {WINDOW})")
    assert held <= WINDOW, f"a paused channel held {held} bytes, more than its {WINDOW} window"

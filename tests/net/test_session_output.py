"""``jump ssh`` writes all the session's output before it exits, however slowly it is read.

An e2e run lost the tail of a 1 MiB ``cat`` (exit 0, ``AssertionError: Data should not be
empty`` from asyncio on stderr): with the output pipe full, asyncssh writes what it held back
and the EOF from inside the pipe transport's ``resume_writing``, and asyncio's
``_UnixWritePipeTransport._write_ready`` then closes the pipe as if it had been flushed
(see ``jumpgate.protocol.pipe_out``). A real asyncssh server on 127.0.0.1 sends 1 MiB and
its EOF, and its exit status only later, as the node does; the client's stdout is a one-page
pipe read slowly by a thread, as a pager or a loaded CI worker reads it. With asyncssh's
redirect this came back 1005320 bytes long in every run; through ``write_out`` it is whole.
A socket whose peer shut down its sending side got nothing through asyncio's pipe transport
(the adversarial review's finding); it gets every byte too.
"""

import asyncio
import fcntl
import os
import random
import socket
import threading
import time
from collections.abc import Callable

import asyncssh
import pytest

from jumpgate.protocol.pipe_out import write_out
from tests.support import open_ssh_server

pytestmark = pytest.mark.net


PAYLOAD = bytes(range(256)) * 4096
"""1 MiB: within the channel's window, so all of it and the EOF are in before it is read."""


async def _send(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """The payload in packets of uneven sizes, as a command's output comes; then its EOF and
    the exit."""
    sizes = random.Random(len(PAYLOAD))
    at = 0
    while at < len(PAYLOAD):
        step = sizes.randrange(1, 40000)
        process.stdout.write(PAYLOAD[at : at + step])
        at += step
    process.stdout.write_eof()  # as the node does when the command's output ends
    await process.stdin.read()  # the exit status comes later: here, once the client is done
    process.exit(0)


def _read_slowly(fd: int, into: bytearray) -> None:
    time.sleep(0.5)  # the server's output and its EOF are all in the client's channel buffer
    while chunk := os.read(fd, 16384):
        into += chunk
        time.sleep(0.0005)


def _one_page_pipe() -> tuple[int, int]:
    ours, theirs = os.pipe()
    fcntl.fcntl(theirs, fcntl.F_SETPIPE_SZ, 4096)  # a pipe of one page: it is full at every write
    return ours, theirs


def _half_closed_socket() -> tuple[int, int]:
    """A socket pair whose reading end has shut down its own sending side, as an inetd or
    ``socat EXEC:`` peer may: asyncio's pipe transport took that for the reader going away."""
    ours, theirs = socket.socketpair()
    ours.shutdown(socket.SHUT_WR)
    return ours.detach(), theirs.detach()


async def _received(stdout: Callable[[], tuple[int, int]]) -> bytes:
    server, port = await open_ssh_server(_send)
    ours, theirs = stdout()
    got = bytearray()
    reader = threading.Thread(target=_read_slowly, args=(ours, got))
    reader.start()
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="x", known_hosts=None, client_keys=None
        ) as conn:
            process = await conn.create_process(encoding=None)
            copying = asyncio.ensure_future(write_out(process.stdout, theirs))
            await asyncio.to_thread(reader.join, 60)  # the output pipe was closed
            process.stdin.write_eof()
            await asyncio.wait_for(copying, 60)
            await asyncio.wait_for(process.wait_closed(), 60)
            assert process.exit_status == 0
    finally:
        reader.join(60)
        os.close(ours)
        server.close()
        await server.wait_closed()
    return bytes(got)


@pytest.mark.parametrize("stdout", [_one_page_pipe, _half_closed_socket])
def test_every_byte_of_output_is_written_before_jump_ssh_exits(
    stdout: Callable[[], tuple[int, int]],
) -> None:
    got = asyncio.run(_received(stdout))
    assert len(got) == len(PAYLOAD)
    assert got == PAYLOAD

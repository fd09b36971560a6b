"""A session's output stream copied to a local descriptor, every byte of it, before its EOF.

asyncssh's own redirect to a pipe (``redirect(stdout=file)``) loses the tail of the output
when the pipe is slower than the channel: once the pipe has taken its buffer, asyncio's
``_UnixWritePipeTransport._write_ready`` calls the protocol's ``resume_writing``; asyncssh
then delivers what it held back and the channel's EOF from inside that call, the new bytes
go to the transport's buffer and its EOF marks it closing, and ``_write_ready``, seeing it
closing, closes the pipe with those bytes still in its buffer (CPython 3.11;
asyncio logs ``AssertionError: Data should not be empty`` from the writer left registered).
``jump ssh host cat < 1MiB`` came back some 40 KiB short, exit 0, under load.

Nor is asyncio's pipe transport used here: it watches a socket or FIFO for reading to learn
that its reader went away, so a socket whose other end only shut down its sending side
(``socketpair``, inetd, ``socat EXEC:``) looked gone and got no output at all. Here a task
of ours reads the channel and writes each chunk with plain non-blocking writes, waiting for
the descriptor to take more; nothing is written from inside a callback, and the copy ends
only after the last byte. As ssh(1) does, a write that fails (the reader went away, a full
disk) drops the rest, which is still read from the channel so the session is not held up.
"""

import asyncio
import contextlib
import os
from typing import Protocol

import asyncssh

CHUNK = 64 * 1024
"""What is read from the channel at once."""


class Source(Protocol):
    """What is copied: an asyncssh ``SSHReader`` of bytes (``process.stdout``)."""

    async def read(self, n: int = -1) -> bytes: ...


async def write_out(source: Source, fd: int) -> None:
    """Copy ``source`` to ``fd`` until the source's EOF, then close ``fd`` (this takes it
    over). ``fd`` is made non-blocking (the caller restores the mode of the streams it
    shares with others once every copy has ended)."""
    try:
        os.set_blocking(fd, False)
        writing = True
        while data := await _read(source):
            if writing:
                writing = await _write_all(fd, data)
    finally:
        os.close(fd)


async def _read(source: Source) -> bytes:
    """The next chunk, or ``b""`` at the end: a channel that failed ends the copy too (the
    session's own outcome says why)."""
    with contextlib.suppress(OSError, asyncssh.Error):
        return await source.read(CHUNK)
    return b""


async def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``, waiting while ``fd`` is full; False once a write failed."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _writable(fd)
        except OSError:
            return False  # EPIPE, ENOSPC, EFBIG...: the rest is dropped, as ssh(1) does
    return True


async def _writable(fd: int) -> None:
    """Until ``fd`` can take more (or is in error: the next write says which)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)

"""A session's output stream copied to a local descriptor, every byte of it, before its EOF.

asyncssh's own redirect to a pipe (``redirect(stdout=file)``) loses the tail of the output
when the pipe is slower than the channel: once the pipe has taken its buffer, asyncio's
``_UnixWritePipeTransport._write_ready`` calls the protocol's ``resume_writing``; asyncssh
then delivers what it held back and the channel's EOF from inside that call, the new bytes
go to the transport's buffer and its EOF marks it closing, and ``_write_ready``, seeing it
closing, closes the pipe with those bytes still in its buffer (CPython 3.11;
asyncio logs ``AssertionError: Data should not be empty`` from the writer left registered).
``jump ssh host cat < 1MiB`` came back some 40 KiB short, exit 0, under load. Here the
output is read from the channel by a task of ours and written with ``drain``: nothing is
written from inside the transport's callbacks, and the EOF is written after the last byte.
"""

import asyncio
import contextlib
import os
import stat
from typing import Protocol

import asyncssh

CHUNK = 64 * 1024
"""What is read from the channel at once: no more than the pipe transport's high-water mark."""


class Source(Protocol):
    """What is copied: an asyncssh ``SSHReader`` of bytes (``process.stdout``)."""

    async def read(self, n: int = -1) -> bytes: ...


class _Pipe(asyncio.BaseProtocol):
    """The local pipe's flow control: ``ready`` is clear while it holds more than it should."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self.ready.clear()

    def resume_writing(self) -> None:
        self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ready.set()  # a reader that went away takes nothing more: nothing waits on it
        if not self.closed.done():
            self.closed.set_result(None)


async def write_out(source: Source, fd: int) -> None:
    """Copy ``source`` to ``fd`` (which this takes over and closes) until the source's EOF,
    then close ``fd``: returns once the last byte is written or the local reader has gone.

    A reader that went away (``jump ssh host cmd | head -1``) gets nothing more; what comes
    after is read and dropped, so the session is never held up by it, as ssh(1) does.
    """
    pipe = open(fd, "wb", buffering=0)  # noqa: SIM115 (the transport owns it from here)
    if stat.S_ISREG(os.fstat(fd).st_mode):  # a file: plain writes, no transport needed
        with pipe:
            while data := await _read(source):
                view = memoryview(data)
                while view:
                    view = view[pipe.write(view) or 0 :]  # a file may take part of it
        return
    transport, protocol = await asyncio.get_running_loop().connect_write_pipe(_Pipe, pipe)
    try:
        while data := await _read(source):
            if not transport.is_closing():
                transport.write(data)
                await protocol.ready.wait()
    finally:
        transport.close()  # its EOF goes once its buffer is out
    await protocol.closed


async def _read(source: Source) -> bytes:
    """The next chunk, or ``b""`` at the end: a channel that failed ends the copy too (the
    session's own outcome says why)."""
    with contextlib.suppress(OSError, asyncssh.Error):
        return await source.read(CHUNK)
    return b""

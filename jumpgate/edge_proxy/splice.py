"""Joining two byte streams with flow control end to end.

Each direction reads a chunk and waits for the other side to drain it before reading again,
so a reader that stops reading stops the writer at the far end (SSH window, then TCP)
instead of growing a buffer in the proxy.
"""

import asyncio
import contextlib

import asyncssh

CHUNK = 64 * 1024

Reader = asyncssh.SSHReader[bytes]
Writer = asyncssh.SSHWriter[bytes]


async def _pump(reader: Reader, writer: Writer) -> int:
    moved = 0
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            moved += len(data)
            await writer.drain()
    except (asyncssh.Error, ConnectionError, BrokenPipeError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
    return moved


async def splice(a: tuple[Reader, Writer], b: tuple[Reader, Writer]) -> tuple[int, int]:
    """Copy a→b and b→a until both directions end; bytes moved each way."""
    try:
        forward, backward = await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            with contextlib.suppress(Exception):
                writer.close()
    return forward, backward

"""The bytes between a session's command and its channel, with flow control both ways.

The command's stdout and stderr (or its PTY) are read through asyncio read-pipe transports
whose reading pauses while the channel's send buffer is full (the client's window is shut);
its stdin is written through a write-pipe transport whose buffer filling up pauses the
channel's reading (the client's window stops opening). As sshd does, input that finds the
command's stdin closed is dropped (EPIPE): a command that reads no input keeps its status.
"""

import asyncio
import contextlib
import os
import termios
from collections.abc import Callable

import asyncssh

Deliver = Callable[[bytes, asyncssh.DataType], None]
"""Takes output on its way to the channel (recorded and watched there)."""


class Output(asyncio.Protocol):
    """One output stream of the command (stdout, stderr or the PTY), read until its end."""

    def __init__(self, datatype: asyncssh.DataType, deliver: Deliver) -> None:
        self.datatype = datatype
        self._deliver = deliver
        self._transport: asyncio.ReadTransport | None = None
        self.ended = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._deliver(data, self.datatype)

    def eof_received(self) -> bool:
        return False  # the transport closes: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        # A PTY's master reads EIO once the last slave closed: that is its end, as EOF is.
        if not self.ended.done():
            self.ended.set_result(None)

    def pause(self) -> None:
        if self._transport is not None and self._transport.is_reading():
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            with contextlib.suppress(RuntimeError):
                self._transport.resume_reading()

    def close(self) -> None:
        """Read no more (the client can take no more: sshd closes its end, the command gets
        SIGPIPE at its next write)."""
        if self._transport is not None:
            self._transport.close()


class Input(asyncio.Protocol):
    """The command's stdin (or the PTY's input side), written as the channel delivers."""

    def __init__(self, channel: asyncssh.SSHServerChannel[bytes], *, terminal: bool) -> None:
        self._channel = channel
        self._terminal = terminal
        self._transport: asyncio.WriteTransport | None = None
        self._gone = False  # the command closed its stdin: what comes is dropped, as by sshd
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport

    @property
    def paused(self) -> bool:
        """The command's input is full: the channel's reading waits for it to drain."""
        return self._paused

    def write(self, data: bytes) -> None:
        if self._transport is None or self._gone or self._transport.is_closing():
            return
        self._transport.write(data)

    def eof(self) -> None:
        """The user's EOF. A pipe is closed once what was written is flushed; a terminal is
        left open, as sshd leaves it (only its input side would close), and gets the
        terminal's EOF character typed when it is in canonical mode, as ^D at a keyboard,
        so a command reading it (``cat``) ends."""
        transport = self._transport
        if transport is None or self._gone or transport.is_closing():
            return
        if not self._terminal:
            transport.close()
            return
        info = transport.get_extra_info("pipe")
        with contextlib.suppress(OSError, termios.error, AttributeError):
            attributes = termios.tcgetattr(info.fileno())
            if attributes[3] & termios.ICANON:
                transport.write(attributes[6][termios.VEOF])

    def pause_writing(self) -> None:
        self._paused = True
        self._channel.pause_reading()

    def resume_writing(self) -> None:
        # Not from inside the transport's own flush: asyncio's write pipe closes itself there
        # if a close was asked for meanwhile, dropping what the resumed channel just wrote.
        self._paused = False
        asyncio.get_running_loop().call_soon(self._resume_channel)

    def _resume_channel(self) -> None:
        if not self._paused:
            with contextlib.suppress(Exception):
                self._channel.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone = True
        if self._paused:  # nothing more is written: the channel must not stay shut
            self._paused = False
            self._resume_channel()

    def close(self) -> None:
        """Write nothing more (the command is over); a close already under way finishes."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.abort()


async def read_from(fd: int, protocol: Output) -> None:
    """Start reading ``fd`` (ours from now) into ``protocol``."""
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: protocol, os.fdopen(fd, "rb", buffering=0)
    )


async def write_to(fd: int, protocol: Input) -> None:
    """Start writing ``protocol``'s input to ``fd`` (ours from now)."""
    await asyncio.get_running_loop().connect_write_pipe(
        lambda: protocol, os.fdopen(fd, "wb", buffering=0)
    )

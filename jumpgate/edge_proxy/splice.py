"""Joining two SSH channels with flow control end to end.

A ``Splice`` is two channel sessions, one per side, that hand each chunk they receive
straight to the other side's channel, with no stream, queue or task in between. When a
channel cannot take more (its peer's window is spent and its buffer is past the high-water
mark), asyncssh tells its session to pause writing, and the splice stops reading the other
side: its window is no longer opened, so a reader that stops reading stops the writer at the
far end (SSH window, then TCP) instead of growing a buffer in the proxy.

Until both channels are open, what arrives is held and the sending side is paused, so at
most one window is ever held.
"""

import contextlib
from collections.abc import Callable
from typing import Any

import asyncssh


class Half(asyncssh.SSHTCPSession[bytes]):
    """One side of a splice: the session of one of the two channels."""

    def __init__(self, splice: "Splice") -> None:
        self._splice = splice
        self.peer: Half
        self.chan: Any = None  # SSHTCPChannel or SSHServerChannel; typed loosely by asyncssh
        self.moved = 0  # bytes received on this side and handed to the other
        self._ready = False
        self._held: list[bytes] = []
        self._held_eof = False
        self._eof = False
        self._lost = False

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        self._ready = True
        self.peer.release()

    def release(self) -> None:
        """The peer is ready: pass on what this side held for it, and read again."""
        if not self._held and not self._held_eof:
            return
        for data in self._held:
            self.peer.send(data)
        self._held.clear()
        if self._held_eof:
            self.peer.send_eof()
        if self.chan is not None and not self._lost:
            self.chan.resume_reading()

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.chan.write(data)

    def send_eof(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.chan.write_eof()

    def finish(self) -> None:
        """Both directions are done: close this side's channel."""
        if self.chan is not None:
            self.chan.close()

    def peer_lost(self) -> None:
        """The other side closed: end this side's input, and close once it has ended too.

        As a TCP forward would: the user's client may still send (an SSH disconnect, say)
        after the node's side closed, and expects an orderly close, not a reset.
        """
        if self._eof:
            self.finish()
        elif self.chan is not None:
            self.send_eof()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.peer._lost:
            return
        self.moved += len(data)
        if self.peer._ready:
            self.peer.send(data)
        else:
            self._held.append(data)
            self.chan.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self.peer._lost:
            self.finish()
        elif self.peer._ready:
            self.peer.send_eof()
        else:
            self._held_eof = True
        return True  # half-close: the other direction keeps flowing

    def pause_writing(self) -> None:
        if self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.chan is not None and not self.peer._lost:
            self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._ready = False
        if not self.peer._lost:
            self.peer.peer_lost()
        self._splice.half_lost()


class Splice:
    """Two channels joined; ``on_end`` gets the splice when both have closed."""

    def __init__(
        self,
        user: Callable[["Splice"], Half] = Half,
        on_end: Callable[["Splice"], None] | None = None,
    ) -> None:
        self.user = user(self)
        self.node = Half(self)
        self.user.peer, self.node.peer = self.node, self.user
        self._on_end = on_end
        self._open = 2

    def half_lost(self) -> None:
        self._open -= 1
        if self._open == 0 and self._on_end is not None:
            self._on_end(self)

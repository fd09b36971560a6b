"""Joining two byte streams with flow control end to end.

A ``Splice`` has two sides: the user's SSH channel, and the node's, which is either an SSH
channel through the tunnel or a TCP connection the agent dialled back (see ``dialback``).
Each side hands every chunk it receives straight to the other, with no stream, queue or task
in between. When a side cannot take more (an SSH peer's window is spent, or a socket's
buffer is past the high-water mark), asyncssh or asyncio tells it to pause writing, and the
splice stops reading the other side: so a reader that stops reading stops the writer at the
far end (SSH window, then TCP) instead of growing a buffer in the proxy.

Until both sides are open, what arrives is held and the sending side is paused, so at most
one window is ever held.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncssh


class Side:
    """What one side of a splice does, whatever carries it."""

    def __init__(self, splice: "Splice") -> None:
        self.splice = splice
        self.peer: Side | None = None
        self.moved = 0  # bytes received on this side and handed to the other
        self.ready = False
        self.lost = False
        self._held: list[bytes] = []
        self._held_eof = False
        self._eof = False

    # What carries the bytes: a channel or a socket.
    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def send_eof(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Both directions are done: close this side."""
        raise NotImplementedError

    def abort(self) -> None:
        """Close this side now, whatever it still holds to send (the proxy is stopping)."""
        raise NotImplementedError

    def tell(self, line: str) -> None:
        """Say ``line`` to the person on this side where the carrier has a place for it (a
        session channel's stderr); a raw byte stream has none."""

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    # Callbacks with the same names and meaning in asyncssh sessions and asyncio protocols.
    def eof_received(self) -> bool:
        self.received_eof()
        return True  # half-close: the other direction keeps flowing

    def pause_writing(self) -> None:
        self.blocked()

    def resume_writing(self) -> None:
        self.unblocked()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()

    # Events, the same for both carriers.
    def started(self) -> None:
        self.ready = True
        if self.peer is not None:
            self.peer.release()

    def release(self) -> None:
        """The peer is ready: pass on what this side held for it, and read again."""
        if self.peer is None or (not self._held and not self._held_eof):
            return
        for data in self._held:
            self.peer.send(data)
        self._held.clear()
        if self._held_eof:
            self.peer.send_eof()
        if not self.lost:
            self.resume_reading()

    def received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.lost:
            return
        self.moved += len(data)
        if peer is not None and peer.ready:
            peer.send(data)
        else:
            self._held.append(data)
            self.pause_reading()

    def received_eof(self) -> None:
        self._eof = True
        peer = self.peer
        if peer is not None and peer.lost:
            self.finish()
        elif peer is not None and peer.ready:
            peer.send_eof()
            if peer._eof:  # both directions have ended: close both (each flushes first)
                self.finish()
                peer.finish()
        else:
            self._held_eof = True

    def blocked(self) -> None:
        """This side cannot take more: stop reading the other."""
        if self.peer is not None and not self.peer.lost:
            self.peer.pause_reading()

    def unblocked(self) -> None:
        if self.peer is not None and not self.peer.lost:
            self.peer.resume_reading()

    def peer_lost(self) -> None:
        """The other side closed: end this side's input, and close once it has ended too.

        As a TCP forward would: the user's client may still send (an SSH disconnect, say)
        after the node's side closed, and expects an orderly close, not a reset.
        """
        if self._eof:
            self.finish()
        else:
            self.send_eof()

    def closed(self) -> None:
        self.lost = True
        self.ready = False
        if self.peer is not None and not self.peer.lost:
            self.peer.peer_lost()
        self.splice.side_closed()


class ChannelSide(Side, asyncssh.SSHTCPSession[bytes]):
    """A side carried by an SSH channel (the user's, or one through the node's tunnel)."""

    def __init__(self, splice: "Splice") -> None:
        super().__init__(splice)
        self.chan: Any = None  # SSHTCPChannel or SSHServerChannel

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        self.started()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received(data)

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.chan.write(data)

    def send_eof(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.chan.write_eof()

    def finish(self) -> None:
        self.chan.close()

    def abort(self) -> None:
        self.chan.close()

    def pause_reading(self) -> None:
        self.chan.pause_reading()

    def resume_reading(self) -> None:
        self.chan.resume_reading()


class SocketSide(Side, asyncio.Protocol):
    """A side carried by a TCP connection; ``started`` is called by whoever adopts it."""

    def __init__(self, splice: "Splice") -> None:
        super().__init__(splice)
        self.transport: asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.received(data)

    def send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def send_eof(self) -> None:
        if not self.transport.is_closing() and self.transport.can_write_eof():
            self.transport.write_eof()

    def finish(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def pause_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()


class Splice:
    """Two sides joined; ``on_end`` gets the splice when both have closed."""

    def __init__(
        self,
        user: Callable[["Splice"], Side] = ChannelSide,
        on_end: Callable[["Splice"], None] | None = None,
    ) -> None:
        self.user = user(self)
        self.node: Side | None = None
        self._on_end = on_end
        self._open = 2
        self._ended = False

    def attach(self, node: Side) -> Side:
        """Make ``node`` the node's side; what the user sent meanwhile follows once it starts."""
        self.node, node.peer, self.user.peer = node, self.user, node
        return node

    def node_channel(self) -> "ChannelSide":
        """A node's side carried by an SSH channel, attached: the session factory to hand
        ``create_connection`` (through a tunnel, or to a peer proxy)."""
        side = ChannelSide(self)
        self.attach(side)
        return side

    def side_closed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self._end()

    def close(self) -> bool:
        """End the session now (the proxy is stopping): close both sides, as when either end
        hangs up; ``on_end`` follows once both have closed. False, and nothing done, while a
        side is still opening (ask again in a moment)."""
        sides = [side for side in (self.user, self.node) if side is not None and not side.lost]
        if any(not side.ready for side in sides):
            return False
        for side in sides:
            with contextlib.suppress(OSError, asyncssh.Error):
                side.abort()
        return True

    def tell(self, line: str) -> None:
        """Say ``line`` to the user, where their side can show it (``Side.tell``)."""
        self.user.tell(line)

    def abandon(self) -> None:
        """Treat the session as ended although a side has not reported its close (a peer
        that never answers): ``on_end`` now, once; the sides' later closes change nothing."""
        self._end()

    @property
    def ended(self) -> bool:
        return self._ended

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._on_end is not None:
            self._on_end(self)

    @property
    def bytes_to_node(self) -> int:
        return self.user.moved

    @property
    def bytes_to_user(self) -> int:
        return self.node.moved if self.node is not None else 0

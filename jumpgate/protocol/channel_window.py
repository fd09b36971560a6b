"""A paused asyncssh channel's receive window, kept to what its session has taken.

When a session cannot take more (``jump ssh``'s stdout is a pipe to a slow reader), asyncssh
pauses the channel and buffers what arrives. On resuming it delivers the first buffered
packet and re-opens the whole window, counting the bytes still buffered as consumed
(asyncssh 2.24.1, ``SSHChannel._deliver_data``): each pause lets the peer send another
window, so a client reading ``head -c 2G /dev/zero`` at 1 MB/s grew by about 13 MB a second
(issue 14, decision 0019). Apache MINA sshd had the same bug and fixed it the same way
(apache/mina-sshd#292): open the window only by what the reader has taken. Any asyncssh
channel whose session pauses reading (a node's process stdin, a proxy splice) can use this.
"""

from typing import Any


def bound_receive_window(channel: Any) -> None:
    """Re-open ``channel``'s receive window only for bytes delivered to its session.

    It reaches into asyncssh's channel, so it checks what it relies on and does nothing if
    that has changed (the bounded-memory test in tests/security/test_bounds.py then fails).
    """
    deliver = getattr(type(channel), "_deliver_data", None)  # none on a line editor's proxy
    if deliver is None or not all(
        hasattr(channel, name) for name in ("_recv_buf", "_recv_window", "_init_recv_window")
    ):
        return
    channel._deliver_data = _CountingBuffered(channel, deliver)


class _CountingBuffered:
    """``channel._deliver_data`` counting the bytes still buffered as delivered, so the
    window adjustment skips them. One small object, not a closure: a tunnel's control
    channel holds it for the tunnel's life (decision 0021)."""

    __slots__ = ("_channel", "_deliver")

    def __init__(self, channel: Any, deliver: Any) -> None:
        self._channel = channel
        self._deliver = deliver  # the class's: an instance's would be wrapped twice

    def __call__(self, data: bytes, datatype: int | None) -> None:
        channel = self._channel
        pending = sum(len(chunk) for chunk, _ in channel._recv_buf)
        channel._recv_window += pending  # as if delivered: the adjustment skips them
        try:
            self._deliver(channel, data, datatype)
        finally:
            channel._recv_window -= pending

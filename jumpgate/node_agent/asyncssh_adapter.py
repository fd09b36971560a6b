"""Every use the node makes of asyncssh beyond its documented API, in one place.

The node serves a session as an ``asyncssh.SSHServerProcess`` (its documented ``redirect``
carries the bytes between the channel and the command, with flow control both ways), but it
must also see those bytes on the way past: output is recorded before it is sent, transfers
are watched in both directions, and a session over its audit budget takes no more input.
asyncssh documents no hook for the output its redirection forwards, nor a way to serve the
``sftp`` subsystem as a process rather than with its own in-process SFTP server (which would
run with the agent's privileges). So this module, and only this one, relies on these
undocumented parts, each checked by ``tests/unit/test_asyncssh_adapter.py`` against the
version pinned in ``CHECKED_VERSION``:

- ``SSHServerProcess(process_factory, sftp_factory, sftp_version, allow_scp)``: how asyncssh
  itself builds a process (``SSHServerConnection.forward_tunneled_session``);
- ``SSHProcess.feed_data(data, datatype)``: where redirected output reaches the channel;
- ``SSHServerStreamSession._session_factory(stdin, stdout, stderr)`` and the constructors
  ``SSHReader(session, channel)`` and ``SSHWriter(session, channel, datatype)``: how a session
  is started, used here for ``sftp`` only.

The rest are documented session callbacks (``data_received``, ``terminal_size_changed``,
``session_started``, ``connection_lost``), overridden to tell an ``Observer``.
The process factory given to asyncssh is a plain function (documented: it may be one), which
hands the session's coroutine to ``spawn``: the node's task group supervises it, not
asyncssh's connection (docs/decisions/0025).
"""

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import asyncssh

CHECKED_VERSION = "2.24.1"
"""The asyncssh release the private parts above were read in and tested against."""

Handler = Callable[["ObservedProcess"], Coroutine[Any, Any, None]]
"""Serves one session to its end."""
Spawn = Callable[[Coroutine[Any, Any, None]], object]
"""Runs a session's handler as a supervised task."""


class Observer(Protocol):
    """What the node does as a session's bytes and events go past."""

    def started(self) -> None:
        """The exec, shell or subsystem request was accepted; no data has been delivered."""

    def output(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        """Output on its way to the user; False: it goes no further."""

    def input(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        """Input from the user on its way to the command; False: it goes no further."""

    def resized(self, width: int, height: int) -> None:
        """The user's terminal changed size (the PTY already follows it)."""

    def closed(self) -> None:
        """The channel is gone."""


class ObservedProcess(asyncssh.SSHServerProcess[bytes]):
    """A session process that tells its ``observer`` what passes, and serves ``sftp`` as a
    process like any other (the handler runs the node's SFTP server as the login)."""

    def __init__(self, handler: Handler, observer: Observer, spawn: Spawn) -> None:
        def start(process: asyncssh.SSHServerProcess[bytes]) -> None:
            assert process is self
            spawn(handler(self))

        super().__init__(start, None, 0, False)
        self.observer = observer

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # the handler refuses unknown subsystems with a message

    def feed_data(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.observer.output(data, datatype):
            super().feed_data(data, datatype)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.observer.input(data, datatype):
            super().data_received(data, datatype)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        super().terminal_size_changed(width, height, pixwidth, pixheight)
        self.observer.resized(width, height)

    def session_started(self) -> None:
        # asyncssh calls this once it has accepted the exec or subsystem request, and only
        # then delivers the channel's data: the observer is ready before the first byte.
        self.observer.started()
        channel = self.channel
        if channel.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = asyncssh.SSHReader[bytes](self, channel)
        stdout = asyncssh.SSHWriter[bytes](self, channel)
        stderr = asyncssh.SSHWriter[bytes](self, channel, asyncssh.EXTENDED_DATA_STDERR)
        self._session_factory(stdin, stdout, stderr)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.observer.closed()

"""A session channel as the node serves it: asyncssh's documented callback session.

It accepts the requests sshd accepts (pty, env is ignored, shell, exec, subsystem), tells
an ``Observer`` what passes (output before it is sent, input before the command gets it),
and carries the bytes between the channel and the command's pipes or PTY (``child_io``)
with flow control both ways. It ends as sshd ends a session: the command's output all read
and queued, then exit-status (or exit-signal), EOF and CLOSE (docs/decisions/0027).

The handler that runs the command is started through ``spawn`` once the request is
accepted: the node's task group supervises it, not asyncssh (docs/decisions/0025).
"""

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import asyncssh

from jumpgate.node_agent import asyncssh_adapter
from jumpgate.node_agent.child_io import Input, Output
from jumpgate.node_agent.session_env import MAX_CLIENT_VARIABLES

Handler = Callable[["SessionChannel"], Coroutine[Any, Any, None]]
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


class SessionChannel(asyncssh.SSHServerSession[bytes]):
    """One session channel: its requests, its bytes, its end."""

    def __init__(self, handler: Handler, observer: Observer, spawn: Spawn) -> None:
        self._handler = handler
        self.observer = observer
        self._spawn = spawn
        self._channel: asyncssh.SSHServerChannel[bytes] | None = None
        self.command: str | None = None  # the exec request's command
        self.subsystem: str | None = None
        self.term_type: str | None = None  # set by a pty request
        self.term_size: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.pid: int | None = None  # the command's, once started (signals go to it)
        self.terminal: int | None = None  # the PTY's master, while the command runs
        self._input: Input | None = None
        self._outputs: list[Output] = []
        self._attached = False  # the command's stdin has been attached (or never will be)
        self._early: list[bytes] = []  # input that came before the command started
        self._early_eof = False
        self._writing_paused = False  # the channel's send buffer is full
        self.lost = asyncio.Event()  # the channel is gone

    @property
    def channel(self) -> asyncssh.SSHServerChannel[bytes]:
        assert self._channel is not None
        return self._channel

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.channel.get_extra_info(name, default)

    # -- requests (asyncssh's documented callbacks) -------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._channel = chan
        asyncssh_adapter.on_end_of_writing(chan, self._client_stopped_reading)
        # sshd refuses env requests past 128; asyncssh would keep them all, in root's memory
        asyncssh_adapter.limit_environment(chan, MAX_CLIENT_VARIABLES)

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self.term_type, self.term_size = term_type, term_size
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.subsystem = subsystem
        return True  # the handler refuses unknown subsystems with a message

    def session_started(self) -> None:
        # asyncssh calls this once it has accepted the request, and only then delivers the
        # channel's data: the observer is ready before the first byte.
        self.observer.started()
        self._spawn(self._handler(self))

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if not self.observer.input(data, datatype) or datatype is not None:
            return
        if self._input is not None:
            self._input.write(data)
        elif not self._attached:
            # The command is being started: hold this, and let the channel hold the rest
            # (up to its window) until it can take them (``attach``).
            self._early.append(data)
            self.channel.pause_reading()

    def eof_received(self) -> bool:
        if self._input is not None:
            self._input.eof()
        elif not self._attached:
            self._early_eof = True
        return True  # half-closed: the output goes on

    def signal_received(self, signal_name: str) -> None:
        number = getattr(signal, f"SIG{signal_name}", None)
        if self.pid is not None and isinstance(number, signal.Signals):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, number)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.term_size = (width, height, pixwidth, pixheight)
        if self.terminal is not None:
            with contextlib.suppress(OSError):
                size = struct.pack("HHHH", height, width, pixwidth, pixheight)
                fcntl.ioctl(self.terminal, termios.TIOCSWINSZ, size)
        self.observer.resized(width, height)

    # -- output --------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self._writing_paused = True
        for output in self._outputs:
            output.pause()

    def resume_writing(self) -> None:
        self._writing_paused = False
        for output in self._outputs:
            output.resume()

    def deliver(self, data: bytes, datatype: asyncssh.DataType) -> None:
        """The command's output: seen by the observer, then sent."""
        if not self.observer.output(data, datatype) or self.channel.is_closing():
            return
        self.channel.write(data, datatype)

    def _client_stopped_reading(self) -> None:
        for output in self._outputs:
            output.close()

    # -- the handler's side --------------------------------------------------------------------

    def attach(self, stdin: Input | None, outputs: list[Output]) -> None:
        """Carry the command's bytes from now on; the input held until now goes first."""
        self._outputs = outputs
        if self._writing_paused:
            for output in outputs:
                output.pause()
        if self.channel.is_closing():
            return
        self._input = stdin
        self._attached = True
        early, self._early = self._early, []
        if stdin is not None:
            for data in early:
                stdin.write(data)
            if self._early_eof:
                stdin.eof()
        if stdin is None or not stdin.paused:  # else the pipe resumes it once it drains
            self.channel.resume_reading()

    async def outputs_ended(self) -> None:
        """Until every output stream of the command has ended."""
        await asyncio.gather(*(output.ended for output in self._outputs))

    def detach(self) -> None:
        """The command is over: read and write nothing more of it."""
        for output in self._outputs:
            output.close()
        if self._input is not None:
            self._input.close()
        self._input = None
        self._attached = True  # input from now on is dropped, not held
        self.terminal = None

    def say(self, message: bytes) -> None:
        """A line on the user's stderr, if the channel can still take one."""
        with contextlib.suppress(Exception):
            if not self.channel.is_closing():
                self.channel.write_stderr(message)

    def finish(self, returncode: int) -> None:
        """Report how the command ended (a negative code: the signal that ended it)."""
        with contextlib.suppress(Exception):
            if returncode >= 0:
                asyncssh_adapter.finish(self.channel, returncode)
            else:
                name = signal.Signals(-returncode).name.removeprefix("SIG")
                asyncssh_adapter.finish(self.channel, 128 - returncode, name)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # As sshd closes a gone channel's descriptors: a command waiting on its input (an
        # sftp-server) sees EOF at once, whatever the hangup that follows does.
        self.detach()
        self.lost.set()
        self.observer.closed()

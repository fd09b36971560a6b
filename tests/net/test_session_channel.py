"""``session_channel.SessionChannel`` on a real asyncssh connection on 127.0.0.1.

The node records and watches a session through it, and ends it as sshd does; these show a
session that would go unrecorded or unwatched (output not seen before it is sent, input not
held back, the observer told late) or end out of order (its exit status after its EOF).
The command is a real child process on real pipes (``sessions``).
"""

import asyncio
import getpass
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent import sessions
from jumpgate.node_agent.session_channel import Handler, SessionChannel

pytestmark = pytest.mark.net

SECONDS = 10.0


class _Observer:
    """Records what passes; lets through what ``allow`` says."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.seen: list[tuple[str, Any]] = []
        self.resized_to = asyncio.Event()

    def started(self) -> None:
        self.seen.append(("started", None))

    def output(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        self.seen.append(("output", data))
        return self.allow

    def input(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        self.seen.append(("input", data))
        return self.allow

    def resized(self, width: int, height: int) -> None:
        self.seen.append(("resized", (width, height)))
        self.resized_to.set()

    def closed(self) -> None:
        self.seen.append(("closed", None))

    def of(self, kind: str) -> list[Any]:
        return [value for seen, value in self.seen if seen == kind]


class _Server(asyncssh.SSHServer):
    """Serves every session as a ``SessionChannel`` of ``handler``, its tasks in ``tasks``."""

    def __init__(self, handler: Handler, observer: _Observer, tasks: asyncio.TaskGroup) -> None:
        self.handler = handler
        self.observer = observer
        self.tasks = tasks
        self.spawned = 0

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return SessionChannel(self.handler, self.observer, self._spawn)

    def _spawn(self, handler: Coroutine[Any, Any, None]) -> None:
        self.spawned += 1
        self.tasks.create_task(handler)


@asynccontextmanager
async def _connected(
    handler: Handler, observer: _Observer
) -> AsyncIterator[tuple[asyncssh.SSHClientConnection, Callable[[], int]]]:
    """A client connected to a server of ``handler``; the count of handlers spawned."""
    async with asyncio.TaskGroup() as tasks:
        made: list[_Server] = []

        def factory() -> _Server:
            made.append(_Server(handler, observer, tasks))
            return made[-1]

        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[key],
            server_factory=factory,
            encoding=None,
            line_editor=False,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, username="user"
            ) as conn:
                yield conn, lambda: sum(s.spawned for s in made)
        finally:
            server.close()
            await server.wait_closed()


ACCOUNT = sessions.Account.lookup(getpass.getuser())


def _running(command: str) -> Handler:
    """A handler running ``command`` as the node runs one, through the login's shell."""

    async def handler(session: SessionChannel) -> None:
        session.command = command
        session.finish(await sessions.run(session, ACCOUNT))

    return handler


@pytest.mark.parametrize(
    ("allow", "sent"), [(True, b"output:abc"), (False, b"")], ids=["pass", "hold"]
)
def test_input_and_output_go_past_the_observer_first(allow: bool, sent: bytes) -> None:
    observer = _Observer(allow)

    async def case() -> asyncssh.SSHCompletedProcess:
        async with _connected(_running("printf output:; cat"), observer) as (conn, spawned):
            result = await asyncio.wait_for(conn.run("x", input=b"abc", encoding=None), SECONDS)
            assert spawned() == 1  # run once, through the task group, not by asyncssh as well
        return result

    result = asyncio.run(case())
    assert result.stdout == sent
    assert b"".join(observer.of("input")) == b"abc"
    assert b"".join(observer.of("output")) == (b"output:abc" if allow else b"output:")
    assert observer.seen[0] == ("started", None)  # before the first byte of input
    assert observer.seen[-1] == ("closed", None)


class _Order(asyncssh.SSHClientSession[bytes]):
    """Notes what the server's session sends, in order: output, exit status, EOF."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.received = 0

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received += len(data)
        if self.seen[-1:] != ["data"]:
            self.seen.append("data")

    def exit_status_received(self, status: int) -> None:
        self.seen.append(f"exit {status}")

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.seen.append(f"signal {signal}")

    def eof_received(self) -> bool:
        self.seen.append("eof")
        return False


@pytest.mark.parametrize(
    ("command", "ends"),
    [
        ("head -c 1000000 /dev/zero; exit 3", "exit 3"),
        ("ls /nonexistent", "exit 2"),
        ("head -c 1000000 /dev/zero; kill -TERM $$", "signal TERM"),
    ],
    ids=["status", "stderr", "signal"],
)
def test_the_exit_is_reported_before_the_eof_and_after_all_output(command: str, ends: str) -> None:
    async def case() -> _Order:
        async with _connected(_running(command), _Observer(True)) as (conn, _):
            chan, session = await conn.create_session(_Order, "x", encoding=None)
            chan.write_eof()
            await asyncio.wait_for(chan.wait_closed(), SECONDS)
            assert isinstance(session, _Order)
            return session

    session = asyncio.run(case())
    assert session.seen[-2:] == [ends, "eof"]
    assert session.received == (
        1000000
        if "head" in command
        else len(b"ls: cannot access '/nonexistent': No such file or directory\n")
    )


def test_an_unknown_subsystem_is_refused_with_a_message() -> None:
    async def handler(session: SessionChannel) -> None:
        session.finish(await sessions.run(session, ACCOUNT))

    async def case() -> asyncssh.SSHCompletedProcess:
        async with _connected(handler, _Observer(True)) as (conn, _):
            return await asyncio.wait_for(conn.run(subsystem="nosuch", encoding=None), SECONDS)

    result = asyncio.run(case())
    assert (result.exit_status, result.stderr) == (1, b"subsystem 'nosuch' is not served\n")


def test_a_window_change_is_told_after_the_terminal_follows_it() -> None:
    sizes: list[tuple[int, int]] = []

    async def case() -> _Observer:
        observer = _Observer(True)

        async def handler(session: SessionChannel) -> None:
            await asyncio.wait_for(observer.resized_to.wait(), SECONDS)
            sizes.append(session.term_size[:2])
            session.finish(0)

        async with _connected(handler, observer) as (conn, _):
            process = await conn.create_process(
                term_type="xterm", term_size=(80, 24), encoding=None
            )
            process.change_terminal_size(132, 43)
            await asyncio.wait_for(process.wait_closed(), SECONDS)
        return observer

    observer = asyncio.run(case())
    assert observer.of("resized") == [(132, 43)]
    assert sizes == [(132, 43)]

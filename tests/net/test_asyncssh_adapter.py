"""``asyncssh_adapter.ObservedProcess`` on a real asyncssh connection on 127.0.0.1.

The node records and watches a session through it; if an asyncssh release stops calling
what the adapter overrides (``tests/unit/test_asyncssh_adapter.py`` checks the names), these
show the session would go unrecorded or unwatched: output not seen before it is sent, input
not held back, the observer told late, sftp not run as a process.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent.asyncssh_adapter import Handler, ObservedProcess

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
    """Serves every session as an ``ObservedProcess`` of ``handler``, its tasks in ``tasks``."""

    def __init__(self, handler: Handler, observer: _Observer, tasks: asyncio.TaskGroup) -> None:
        self.handler = handler
        self.observer = observer
        self.tasks = tasks
        self.spawned = 0

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return ObservedProcess(self.handler, self.observer, self._spawn)

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
            "127.0.0.1", 0, server_host_keys=[key], server_factory=factory, encoding=None
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


async def _from_pipe(process: ObservedProcess) -> None:
    """Echo stdin back through a pipe the process redirects, as the node sends a command's
    output; the exit once all of it is sent."""
    data = await process.stdin.read()
    read_end, write_end = os.pipe()
    await process.redirect(stdout=os.fdopen(read_end, "rb", buffering=0))
    os.write(write_end, b"output:" + data)
    os.close(write_end)
    await process.stdout.drain()
    process.exit(0)


@pytest.mark.parametrize(
    ("allow", "sent"), [(True, b"output:abc"), (False, b"")], ids=["pass", "hold"]
)
def test_input_and_output_go_past_the_observer_first(allow: bool, sent: bytes) -> None:
    observer = _Observer(allow)

    async def case() -> asyncssh.SSHCompletedProcess:
        async with _connected(_from_pipe, observer) as (conn, spawned):
            result = await asyncio.wait_for(conn.run("echo", input=b"abc", encoding=None), SECONDS)
            assert spawned() == 1  # run once, through the task group, not by asyncssh as well
        return result

    result = asyncio.run(case())
    assert result.stdout == sent
    assert b"".join(observer.of("input")) == b"abc"
    assert b"".join(observer.of("output")) == (b"output:abc" if allow else b"output:")
    assert observer.seen[0] == ("started", None)  # before the first byte of input
    assert observer.seen[-1] == ("closed", None)


def test_sftp_is_run_as_a_process_by_the_handler() -> None:
    async def handler(process: ObservedProcess) -> None:
        process.stdout.write(f"served {process.subsystem} here".encode())
        process.exit(0)

    observer = _Observer(True)

    async def case() -> asyncssh.SSHCompletedProcess:
        async with _connected(handler, observer) as (conn, _):
            return await asyncio.wait_for(conn.run(subsystem="sftp", encoding=None), SECONDS)

    result = asyncio.run(case())
    assert (result.exit_status, result.stdout) == (0, b"served sftp here")
    assert observer.of("started") == [None]


def test_a_window_change_is_told_after_the_terminal_follows_it() -> None:
    sizes: list[tuple[int, int]] = []

    async def case() -> _Observer:
        observer = _Observer(True)

        async def handler(process: ObservedProcess) -> None:
            await asyncio.wait_for(observer.resized_to.wait(), SECONDS)
            sizes.append(process.term_size[:2])
            process.exit(0)

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

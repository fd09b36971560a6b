"""What ``node_agent.asyncssh_adapter`` relies on in asyncssh beyond its documented API.

Each test names one undocumented part the adapter uses; one failing after an asyncssh upgrade
says which part moved. The behaviour through a real connection (output seen before it is
sent, input held back, sftp run as a process) is in ``tests/net/test_asyncssh_adapter.py``.
"""

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent.asyncssh_adapter import CHECKED_VERSION, ObservedProcess


class _Observer:
    """Records what a process tells it; lets everything through."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def started(self) -> None:
        self.seen.append("started")

    def output(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        return True

    def input(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        return True

    def resized(self, width: int, height: int) -> None:
        self.seen.append(f"resized {width}x{height}")

    def closed(self) -> None:
        self.seen.append("closed")


def _names(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_asyncssh_release_is_the_one_the_adapter_was_checked_against() -> None:
    assert asyncssh.__version__ == CHECKED_VERSION, (
        f"asyncssh {asyncssh.__version__} is installed, the node's adapter was checked against"
        f" {CHECKED_VERSION}: re-read the parts listed in node_agent/asyncssh_adapter.py in the"
        " new release, run this file and tests/net/test_asyncssh_adapter.py, then update"
        " CHECKED_VERSION"
    )


def test_a_server_process_is_built_from_a_factory_and_the_sftp_and_scp_options() -> None:
    assert _names(asyncssh.SSHServerProcess.__init__) == [
        "self",
        "process_factory",
        "sftp_factory",
        "sftp_version",
        "allow_scp",
    ]
    assert issubclass(asyncssh.SSHServerProcess, asyncssh.SSHServerSession)


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("feed_data", ["self", "data", "datatype"]),
        ("data_received", ["self", "data", "datatype"]),
        ("terminal_size_changed", ["self", "width", "height", "pixwidth", "pixheight"]),
        ("session_started", ["self"]),
        ("connection_lost", ["self", "exc"]),
        ("subsystem_requested", ["self", "subsystem"]),
    ],
    ids=["feed_data", "data_received", "resize", "started", "lost", "subsystem"],
)
def test_the_overridden_methods_keep_their_signatures(name: str, parameters: list[str]) -> None:
    assert _names(getattr(asyncssh.SSHServerProcess, name)) == parameters


@pytest.mark.parametrize("stream", [asyncssh.SSHReader, asyncssh.SSHWriter], ids=["r", "w"])
def test_streams_are_built_from_a_session_a_channel_and_a_datatype(stream: type[Any]) -> None:
    assert _names(stream) == ["session", "chan", "datatype"]


def test_the_session_factory_starts_the_process_with_its_streams_through_spawn() -> None:
    """``_session_factory(stdin, stdout, stderr)`` is what the adapter calls for ``sftp``: it
    must make them the process's streams and hand the handler to ``spawn``, not run it."""
    spawned: list[Coroutine[Any, Any, None]] = []
    ran: list[ObservedProcess] = []

    async def handler(process: ObservedProcess) -> None:
        ran.append(process)

    process = ObservedProcess(handler, _Observer(), spawned.append)
    stdin, stdout, stderr = object(), object(), object()
    start: Any = process._session_factory
    result = start(stdin, stdout, stderr)

    assert result is None  # asyncssh starts no task of its own for a plain result
    assert (process.stdin, process.stdout, process.stderr) == (stdin, stdout, stderr)
    assert len(spawned) == 1
    assert not ran  # handed over, not run yet
    asyncio.run(spawned[0])
    assert ran == [process]


def test_a_forwarded_agent_is_opened_as_a_stream_of_the_server_connection() -> None:
    opener = asyncssh.SSHServerConnection.open_agent_connection
    assert inspect.iscoroutinefunction(opener)
    assert _names(opener) == ["self"]
    assert "create_agent_connection" in inspect.getsource(opener)
    source = inspect.getsource(asyncssh.SSHServerConnection.create_agent_connection)
    assert "_agent_listener" in source  # refused unless asyncssh granted the agent request

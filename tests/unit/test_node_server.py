"""``NodeServer.supervise``: the session handlers of one user connection run in one task
group (no socket: a fake of the ``server.Connection`` it is given)."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.server import NodeServer
from jumpgate.node_agent.uploads import Uploader

SECONDS = 5.0


class _Connection:
    """A user connection that closes when told to."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.closed_by_server = False

    async def wait_closed(self) -> None:
        await self.gone.wait()

    def close(self) -> None:
        self.closed_by_server = True
        self.gone.set()


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put(self, item: dict[str, Any], /) -> object:
        self.events.append(item)
        return True


def _server(tmp_path: Path) -> NodeServer:
    events = _Events()
    return NodeServer([], events, Uploader(Spool(tmp_path / "recordings"), events))


def test_handlers_run_until_they_end_even_after_the_connection_has_closed(
    tmp_path: Path,
) -> None:
    async def case() -> list[str]:
        server, conn, steps = _server(tmp_path), _Connection(), []
        let_go = asyncio.Event()

        async def handler(name: str) -> None:
            steps.append(f"{name} began")
            await let_go.wait()  # as a session writes its events after its channel closed
            steps.append(f"{name} ended")

        server.spawn(handler("early"))  # before the supervisor began: kept until it does
        supervising = asyncio.create_task(server.supervise(conn))
        await asyncio.sleep(0)
        server.spawn(handler("late"))
        await asyncio.sleep(0)
        conn.gone.set()
        await asyncio.sleep(0.05)
        assert not supervising.done()  # the handlers have not ended yet
        let_go.set()
        await asyncio.wait_for(supervising, SECONDS)
        assert not conn.closed_by_server
        return steps

    steps = asyncio.run(case())
    assert sorted(steps) == ["early began", "early ended", "late began", "late ended"]


def test_a_handler_that_fails_unexpectedly_ends_the_connection_and_its_sessions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def case() -> tuple[_Connection, list[str]]:
        server, conn, steps = _server(tmp_path), _Connection(), []

        async def session() -> None:
            try:
                await asyncio.sleep(SECONDS)
            finally:
                steps.append("other session ended")  # where its events are written

        async def failing() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("a bug")

        supervising = asyncio.create_task(server.supervise(conn))
        await asyncio.sleep(0)
        server.spawn(session())
        server.spawn(failing())
        await asyncio.wait_for(supervising, SECONDS)
        return conn, steps

    conn, steps = asyncio.run(case())
    assert conn.closed_by_server
    assert steps == ["other session ended"]
    assert "session handler failed" in caplog.text


def test_a_handler_waiting_for_a_connection_that_closed_first_is_never_run(
    tmp_path: Path,
) -> None:
    async def case() -> list[str]:
        server, conn, steps = _server(tmp_path), _Connection(), []

        async def handler() -> None:
            steps.append("ran")

        conn.gone.set()
        await server.supervise(conn)
        server.spawn(handler())  # after the supervisor ended: closed, not left pending
        await asyncio.sleep(0)
        return steps

    assert asyncio.run(case()) == []

"""The proxy service's background tasks, in one ``asyncio.TaskGroup``.

Two kinds: *loops* that run as long as the service does (liveness beat, audit delivery,
removal polling, peer certificate renewal), stopped together when it drains; and *jobs*, short
calls started by connections (a subsystem attaching, a presence write), given a bounded time
to finish at shutdown. Neither kind may take the others down: a failure is logged, never
raised into the group. Closing waits for the group, so nothing outlives the service.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


async def _logged(coroutine: Coroutine[Any, Any, object], name: str) -> None:
    try:
        await coroutine
    except Exception:
        logger.warning("background task failed", exc_info=True, extra={"task": name})


class Supervisor:
    """One TaskGroup held open from ``start`` to ``close`` by a runner task of its own."""

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._loops: set[asyncio.Task[None]] = set()
        self._jobs: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the group; tasks can be started from now until ``close``."""
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(opened), name="proxy-supervisor")
        await opened

    async def _run(self, opened: asyncio.Future[None]) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            opened.set_result(None)
            await self._stop.wait()
        self._group = None

    def _add(
        self, kind: set[asyncio.Task[None]], coro: Coroutine[Any, Any, object], name: str
    ) -> None:
        if self._group is None or self._stop.is_set():
            coro.close()  # the service is not running: nothing may outlive it
            logger.info("task not started: the proxy is not running", extra={"task": name})
            return
        task = self._group.create_task(_logged(coro, name), name=name)
        kind.add(task)
        task.add_done_callback(kind.discard)

    def loop(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        """Run ``coro`` for as long as the service runs (``stop_loops`` cancels it)."""
        self._add(self._loops, coro, name)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str | None = None) -> None:
        """Run a short call; at ``close`` it gets a bounded time to finish."""
        self._add(self._jobs, coro, name or "job")

    def cancel_loops(self) -> list[asyncio.Task[None]]:
        """Cancel every loop; the tasks, to be awaited."""
        loops = list(self._loops)
        for task in loops:
            task.cancel()
        return loops

    async def finish_jobs(self, within: float) -> None:
        """Give the jobs running now ``within`` seconds, then cancel those still running."""
        if self._jobs:
            _, late = await asyncio.wait(list(self._jobs), timeout=max(0.0, within))
            for task in late:
                task.cancel()

    async def close(self) -> None:
        """Cancel what still runs and wait for the group to end; no task starts after."""
        self.cancel_loops()
        for task in list(self._jobs):
            task.cancel()
        self._stop.set()
        if self._runner is not None:
            await self._runner

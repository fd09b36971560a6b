"""The proxy service's task supervisor: one TaskGroup, failures logged, loops and jobs
stopped as the drain asks, nothing started after close."""

import asyncio
import logging

import pytest

from jumpgate.edge_proxy.supervisor import Supervisor


async def _forever(ran: list[str], name: str) -> None:
    ran.append(name)
    await asyncio.sleep(3600)


async def _fail() -> None:
    raise RuntimeError("boom")


def test_a_failing_task_is_logged_and_takes_nothing_down(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[bool, list[str]]:
        tasks, ran = Supervisor(), list[str]()
        await tasks.start()
        tasks.loop(_forever(ran, "beat"), "beat")
        tasks.spawn(_fail(), "presence")
        await asyncio.sleep(0.05)
        alive = [t for t in asyncio.all_tasks() if t.get_name() == "beat" and not t.done()]
        await tasks.close()
        return bool(alive), ran

    with caplog.at_level(logging.WARNING, logger="jumpgate.edge_proxy.supervisor"):
        alive, ran = asyncio.run(asyncio.wait_for(scenario(), 5))
    assert alive
    assert ran == ["beat"]
    [failed] = [r for r in caplog.records if r.getMessage() == "background task failed"]
    assert getattr(failed, "task", "") == "presence"


def test_loops_are_cancelled_and_jobs_get_their_time_then_are_cut() -> None:
    async def scenario() -> tuple[bool, bool, bool, bool]:
        tasks, ran = Supervisor(), list[str]()
        await tasks.start()
        tasks.loop(_forever(ran, "beat"), "beat")
        quick = asyncio.Event()

        async def short_job() -> None:
            await asyncio.sleep(0.05)
            quick.set()

        tasks.spawn(short_job(), "quick")
        tasks.spawn(_forever(ran, "stuck"), "stuck")
        await asyncio.sleep(0)
        loops = tasks.cancel_loops()
        await asyncio.gather(*loops, return_exceptions=True)
        loop_cancelled = all(t.cancelled() for t in loops)
        started = asyncio.get_running_loop().time()
        await tasks.finish_jobs(0.3)
        waited = asyncio.get_running_loop().time() - started
        await tasks.close()
        leftovers = [t for t in asyncio.all_tasks() if t.get_name() in ("beat", "stuck")]
        return loop_cancelled, quick.is_set(), 0.25 < waited < 2, not leftovers

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == (True, True, True, True)


def test_nothing_starts_before_start_or_after_close() -> None:
    async def scenario() -> list[str]:
        tasks, ran = Supervisor(), list[str]()
        tasks.spawn(_forever(ran, "early"), "early")
        await tasks.start()
        await tasks.close()
        tasks.spawn(_forever(ran, "late"), "late")
        tasks.loop(_forever(ran, "late-loop"), "late-loop")
        await asyncio.sleep(0.01)
        return ran

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == []

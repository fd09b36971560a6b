"""A client flooding window changes (3,000 in 4 s in the review) gets at most one audited
resize per second per session, the last size winning; the final size is always written."""

import asyncio

from jumpgate.node_agent.audit import Resizes


def test_a_flood_of_window_changes_is_coalesced_and_the_last_size_is_written() -> None:
    written: list[tuple[int, int]] = []

    async def flood() -> None:
        resizes = Resizes(lambda w, h: written.append((w, h)), interval=0.2)
        for n in range(3000):
            resizes(80 + n % 50, 24)
            if n % 200 == 0:
                await asyncio.sleep(0.01)
        resizes(132, 43)
        await asyncio.sleep(0.5)  # the waiting size is written when its second comes
        assert written[-1] == (132, 43)
        resizes(100, 30)  # right after: waits, then is written at close
        resizes.close()
        resizes(1, 1)  # after close: ignored

    asyncio.run(asyncio.wait_for(flood(), 10))
    assert written[0] == (80, 24)
    assert written[-1] == (100, 30)
    assert len(written) <= 6, written


def test_changes_a_second_apart_are_each_written() -> None:
    now = [0.0]
    written: list[tuple[int, int]] = []
    resizes = Resizes(lambda w, h: written.append((w, h)), interval=1.0, clock=lambda: now[0])
    for n in range(3):
        resizes(80 + n, 24)
        now[0] += 1.5
    assert written == [(80, 24), (81, 24), (82, 24)]


def test_a_window_change_to_the_size_the_session_has_is_not_a_change() -> None:
    """A client may announce the size the PTY was opened with (seen under load from ``jump
    ssh``): that is no window change, and the recording does not show one either."""
    written: list[tuple[int, int]] = []
    resizes = Resizes(lambda w, h: written.append((w, h)), clock=lambda: 0.0, size=(80, 24))
    resizes(80, 24)
    assert written == []
    resizes(111, 33)
    resizes(111, 33)
    assert written == [(111, 33)]

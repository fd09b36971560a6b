"""The proxy's audit outbox: a batch the receiver refuses for good is sent again item by
item, each refused item replaced by its stand-in, and delivery goes on; a receiver out of
reach keeps everything for the next try (issue 14 round 2, finding 1)."""

import asyncio

import pytest

from jumpgate.protocol.outbox import Outbox, Refused


class Receiver:
    """Takes every batch without a poisoned item; refuses the others for good, or is out
    of reach while ``down``."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.calls = 0
        self.down = False

    async def send(self, batch: list[str]) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("the control plane is out of reach")
        poisoned = [item for item in batch if item.startswith("poison")]
        if poisoned:
            raise Refused(f"cannot store {poisoned[0]!r}")
        self.kept.extend(batch)


def _flush(outbox: Outbox[str], receiver: Receiver) -> bool:
    return asyncio.run(asyncio.wait_for(outbox.flush(receiver.send), 5))


def test_a_refused_item_is_replaced_and_the_rest_delivered_in_order() -> None:
    receiver = Receiver()
    outbox: Outbox[str] = Outbox(batch=10, replace=lambda item, why: f"dropped {item}: {why}")
    for item in ("a", "poison-1", "b", "c"):
        outbox.put(item)
    assert _flush(outbox, receiver)
    assert receiver.kept == ["a", "dropped poison-1: cannot store 'poison-1'", "b", "c"]
    assert (len(outbox), outbox.refused) == (0, 1)
    outbox.put("d")  # and delivery goes on, a batch at a time again
    calls = receiver.calls
    assert _flush(outbox, receiver)
    assert receiver.kept[-1] == "d"
    assert receiver.calls == calls + 1


def test_a_stand_in_refused_too_is_dropped_not_retried() -> None:
    receiver = Receiver()
    outbox: Outbox[str] = Outbox(replace=lambda item, why: f"poison again: {item}")
    for item in ("poison-1", "a"):
        outbox.put(item)
    assert _flush(outbox, receiver)
    assert receiver.kept == ["a"]
    assert (len(outbox), outbox.refused) == (0, 1)


def test_without_a_replacement_a_refused_item_is_dropped_and_counted() -> None:
    receiver = Receiver()
    outbox: Outbox[str] = Outbox(batch=2)
    for item in ("poison-1", "poison-2", "a"):
        outbox.put(item)
    assert _flush(outbox, receiver)
    assert receiver.kept == ["a"]
    assert outbox.refused == 2


def test_a_receiver_out_of_reach_keeps_everything_for_the_next_try() -> None:
    receiver = Receiver()
    receiver.down = True
    outbox: Outbox[str] = Outbox(replace=lambda item, why: f"dropped {item}")
    for item in ("a", "poison-1", "b"):
        outbox.put(item)
    assert not _flush(outbox, receiver)
    assert (len(outbox), outbox.refused, receiver.kept) == (3, 0, [])
    receiver.down = False
    assert _flush(outbox, receiver)
    assert receiver.kept == ["a", "dropped poison-1", "b"]


@pytest.mark.parametrize(
    "down_at", [2, 3, 4], ids=["on-an-item-before", "on-the-refused-item", "on-its-stand-in"]
)
def test_out_of_reach_halfway_through_a_refused_batch_loses_nothing(down_at: int) -> None:
    """Sends: 1 the batch (refused), 2 "a" alone, 3 "poison-1" alone, 4 its stand-in; the
    receiver is out of reach at send ``down_at``, then back."""
    receiver = Receiver()
    sends = 0

    async def failing(batch: list[str]) -> None:
        nonlocal sends
        sends += 1
        if sends == down_at:
            raise ConnectionError("lost")
        await receiver.send(batch)

    outbox: Outbox[str] = Outbox(replace=lambda item, why: f"dropped {item}")
    for item in ("a", "poison-1", "b"):
        outbox.put(item)
    assert not asyncio.run(asyncio.wait_for(outbox.flush(failing), 5))
    assert outbox.refused == 0
    assert _flush(outbox, receiver)
    assert receiver.kept == ["a", "dropped poison-1", "b"]
    assert (len(outbox), outbox.refused) == (0, 1)


def test_the_deliver_loop_does_not_stall_on_a_refused_item() -> None:
    receiver = Receiver()
    outbox: Outbox[str] = Outbox(retry=60, replace=lambda item, why: f"dropped {item}")

    async def run() -> None:
        task = asyncio.create_task(outbox.deliver(receiver.send))
        outbox.put("poison-1")
        outbox.put("a")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if receiver.kept == ["dropped poison-1", "a"]:
                break
        task.cancel()

    asyncio.run(asyncio.wait_for(run(), 5))
    assert receiver.kept == ["dropped poison-1", "a"]

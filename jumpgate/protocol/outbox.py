"""Items waiting to be sent in batches, kept across failed sends.

The proxy records audit events on paths that must not wait for a network call (session
events, login refusals): it puts them here, and a delivery task sends them to the control
plane a batch at a time. A send that fails is retried; at most ``limit`` items wait, the
oldest dropped first and counted.

A batch the receiver refuses for good (``Refused``: it will not take it however often it is
sent, unlike a receiver out of reach) is sent again one item at a time, and each item refused
on its own is replaced by what ``replace`` makes of it (the proxy's ``audit.dropped``) or
dropped, counted and logged. One bad item never holds up the items behind it: before this,
one event the control plane could not store was sent again every ``retry`` seconds, forever,
and every later event of every tenant waited behind it (docs/decisions/0017).
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[list[T]], Awaitable[None]]
Replace = Callable[[T, str], T | None]
"""What stands for an item refused for good, given why (``None``: nothing does)."""


class Refused(Exception):
    """Raised by a ``Send``: the receiver will never take this batch (it said why, in
    ``str()``); sending it again cannot help. Any other exception means "try again later"."""


class Outbox(Generic[T]):
    def __init__(
        self,
        *,
        limit: int = 10_000,
        batch: int = 100,
        retry: float = 5.0,
        replace: Replace[T] | None = None,
    ) -> None:
        self.limit = limit
        self.batch = batch
        self.retry = retry
        self.dropped = 0  # items dropped because ``limit`` were waiting
        self.refused = 0  # items the receiver refused for good
        self._replace = replace
        self._items: deque[T] = deque(maxlen=limit)
        self._pending = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) == self.limit:
            self.dropped += 1
        self._items.append(item)
        self._pending.set()

    def peek(self) -> list[T]:
        """The next batch, oldest first, still queued."""
        return [self._items[n] for n in range(min(self.batch, len(self._items)))]

    async def deliver(self, send: Send[T], *, linger: float = 0.0) -> None:
        """Send batches for as long as the task runs; ``linger`` lets a batch fill up."""
        while True:
            await self._pending.wait()
            await asyncio.sleep(linger)
            self._pending.clear()
            if not await self.flush(send):
                self._pending.set()  # try again after a pause
                await asyncio.sleep(self.retry)

    async def flush(self, send: Send[T]) -> bool:
        """Send everything now; False (and the rest kept) when a send fails for now."""
        while self._items:
            batch = self.peek()
            try:
                await send(batch)
            except Refused as exc:
                if len(batch) > 1:
                    delivered = await self._one_by_one(send, batch)
                else:
                    delivered = await self._set_aside(send, batch[0], str(exc))
                if not delivered:
                    return False
                continue
            except Exception as exc:
                logger.warning("not sent yet, will retry", extra={"reason": str(exc)[:300]})
                return False
            self._acknowledge(batch)
        return True

    async def _one_by_one(self, send: Send[T], batch: list[T]) -> bool:
        """The receiver refused ``batch``: send its items one at a time, so only those it
        refuses on their own are set aside. (A receiver that may have kept part of the batch
        must take a copy sent again as the same item: the proxy's events carry an id.)"""
        for item in batch:
            try:
                await send([item])
            except Refused as exc:
                if not await self._set_aside(send, item, str(exc)):
                    return False
                continue
            except Exception as exc:
                logger.warning("not sent yet, will retry", extra={"reason": str(exc)[:300]})
                return False
            self._acknowledge([item])
        return True

    async def _set_aside(self, send: Send[T], item: T, reason: str) -> bool:
        """Replace ``item``, refused for good, by its stand-in; False when the stand-in could
        not be sent for now (``item`` is kept and tried again later)."""
        stand_in = self._replace(item, reason) if self._replace is not None else None
        if stand_in is not None:
            try:
                await send([stand_in])
            except Refused as exc:
                logger.error(
                    "a stand-in for a refused item was refused too: both dropped",
                    extra={"reason": str(exc)[:300]},
                )
            except Exception as exc:
                logger.warning("not sent yet, will retry", extra={"reason": str(exc)[:300]})
                return False
        self.refused += 1
        logger.warning(
            "refused for good by the receiver: set aside",
            extra={"reason": reason[:300], "refused": self.refused},
        )
        self._acknowledge([item])
        return True

    def _acknowledge(self, sent: Iterable[T]) -> None:
        """Take ``sent`` off the front; those the limit dropped meanwhile are gone already."""
        for item in sent:
            if self._items and self._items[0] is item:
                self._items.popleft()

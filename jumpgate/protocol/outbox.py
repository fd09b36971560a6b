"""Items waiting to be sent in batches, kept across failed sends.

Both the agent (its audit events, over the tunnel) and the proxy (session events, to the
control plane) record events on paths that must not wait for a network call: they put them
here, and a delivery task sends them a batch at a time. A failed send is retried; at most
``limit`` items wait, the oldest dropped first and counted.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[list[T]], Awaitable[None]]


class Outbox(Generic[T]):
    def __init__(self, *, limit: int = 10_000, batch: int = 100, retry: float = 5.0) -> None:
        self.limit = limit
        self.batch = batch
        self.retry = retry
        self.dropped = 0
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
        """Send everything now; False (and the rest kept) when a send fails."""
        while self._items:
            batch = self.peek()
            try:
                await send(batch)
            except Exception as exc:
                logger.warning("not sent yet, will retry", extra={"reason": str(exc)[:300]})
                return False
            for _ in batch:
                self._items.popleft()
        return True

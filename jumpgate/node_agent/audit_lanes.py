"""The agent's audit spool in two lanes (docs/decisions/0016-node-audit-spool.md): a
session's story apart from its transfer events, so that one user's flood of transfer events
neither delays nor crowds out anyone's ``session.start``, ``exec`` and ``session.end``, and
what either lane drops is reported to the platform as ``audit.dropped``.
"""

import asyncio
from pathlib import Path

from jumpgate.node_agent import audit
from jumpgate.node_agent.audit import LIFECYCLE
from jumpgate.node_agent.audit_spool import (
    BATCH,
    LIMIT_BYTES,
    SEGMENT_BYTES,
    AuditSpool,
    Event,
    Send,
    deliver,
)
from jumpgate.protocol.audit import EventType

LIFECYCLE_LANE = "lifecycle"
"""Where a session's story waits (``AuditLanes``), apart from its transfer events."""
LIFECYCLE_BYTES = 16 * 1024 * 1024
"""About 10,000 sessions' ``session.start``, ``exec`` and ``session.end``."""


class AuditLanes:
    """The agent's spool in two lanes, each an ``AuditSpool``: a session's story
    (``audit.LIFECYCLE``) in ``<directory>/lifecycle``, everything else (transfer events,
    window changes, uploads) in ``<directory>``.

    The lifecycle lane is sent first, before every batch of the other: a flood of one user's
    transfer events can neither delay another session's ``session.start``, ``exec`` and
    ``session.end`` nor push them out of a full spool. Events either lane drops are reported
    to the platform as one ``audit.dropped`` event (``W``, ``dropped``: how many), sent in the
    lifecycle lane when there is room. The interface is ``AuditSpool``'s.
    """

    def __init__(
        self,
        directory: Path,
        *,
        limit_bytes: int = LIMIT_BYTES,
        lifecycle_bytes: int = LIFECYCLE_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
        batch: int = BATCH,
        retry: float = 5.0,
    ) -> None:
        self.transfers = AuditSpool(
            directory,
            limit_bytes=limit_bytes,
            segment_bytes=segment_bytes,
            batch=batch,
            retry=retry,
        )
        self.lifecycle = AuditSpool(
            directory / LIFECYCLE_LANE,
            limit_bytes=lifecycle_bytes,
            segment_bytes=segment_bytes,
            batch=batch,
            retry=retry,
        )
        self.retry = retry
        self._reported = 0  # dropped events already reported in an ``audit.dropped``
        self._ready = asyncio.Event()
        if self.transfers.pending_bytes or self.lifecycle.pending_bytes:
            self._ready.set()

    @property
    def dropped(self) -> int:
        return self.transfers.dropped + self.lifecycle.dropped

    @property
    def pending_bytes(self) -> int:
        return self.transfers.pending_bytes + self.lifecycle.pending_bytes

    def put(self, event: Event) -> bool:
        lane = self.lifecycle if event.get("type") in LIFECYCLE else self.transfers
        kept = lane.put(event)
        self._ready.set()
        return kept

    def peek(self) -> list[Event]:
        """The next batch that would be sent."""
        return self.lifecycle.peek() or self.transfers.peek()

    def _report_dropped(self) -> None:
        """Put one ``audit.dropped`` for the events dropped since the last one."""
        count = self.dropped - self._reported
        if count <= 0:
            return
        reported = self.lifecycle.put(
            audit.event(
                EventType.AUDIT_DROPPED,
                outcome="W",
                dropped=count,
                error=(
                    "the node's audit spool was full or could not be written: events dropped "
                    "(the agent's log says when)"
                ),
            )
        )
        # A report that could not be written is not itself a lost event: it is made again.
        self._reported += count if reported else 1

    async def flush(self, send: Send) -> bool:
        """Send everything now, the lifecycle lane ahead of every transfer batch; False (and
        the rest kept) when a send fails."""
        while True:
            self._report_dropped()
            if not await self.lifecycle.flush(send):
                return False
            sent = await self.transfers.send_batch(send)
            if sent is False:
                return False
            if sent is None and not self.lifecycle.pending_bytes:
                return True

    async def deliver(self, send: Send, *, linger: float = 0.0) -> None:
        """Send batches for as long as the task runs; ``linger`` lets a batch fill up."""
        await deliver(self.flush, self._ready, self.retry, send, linger)

    def close(self) -> None:
        self.transfers.close()
        self.lifecycle.close()

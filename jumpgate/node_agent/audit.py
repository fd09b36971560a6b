"""The node's own audit events (exec with its exit code, shell sessions), sent to the proxy.

The agent reaches the platform only through its tunnel: events queue here and are sent in
batches on a short-lived ``jumpgate-audit`` channel; the proxy stamps them with the tunnel's
tenant and node, which the node cannot choose. Events wait in memory while the tunnel is
down (at most ``MAX_QUEUED``; older ones are dropped first, and counted).
"""

import asyncio
import json
import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

import asyncssh

from jumpgate.protocol.tunnel import AUDIT_SUBSYSTEM

logger = logging.getLogger(__name__)

MAX_QUEUED = 10_000
BATCH = 100
RETRY_SECONDS = 5.0


class AuditQueue:
    """Events waiting for the tunnel."""

    def __init__(self) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED)
        self._pending = asyncio.Event()
        self.dropped = 0

    def put(self, event_type: str, *, outcome: str = "I", **fields: Any) -> None:
        if len(self._events) == MAX_QUEUED:
            self.dropped += 1
        self._events.append(
            {
                "type": event_type,
                "outcome": outcome,
                "time": datetime.now(UTC).isoformat(),
                "fields": fields,
            }
        )
        self._pending.set()

    async def send(self, conn: asyncssh.SSHClientConnection) -> None:
        """Send what is queued, batch by batch, for as long as the tunnel lives."""
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._events:
                batch = [self._events[n] for n in range(min(BATCH, len(self._events)))]
                try:
                    refused = await _send(conn, batch)
                except (asyncssh.Error, OSError) as exc:
                    refused = str(exc)
                if refused is not None:
                    logger.warning("audit events not sent yet", extra={"reason": refused})
                    self._pending.set()  # try again
                    await asyncio.sleep(RETRY_SECONDS)
                    break
                for _ in batch:
                    self._events.popleft()


async def _send(conn: asyncssh.SSHClientConnection, batch: list[dict[str, Any]]) -> str | None:
    """Send one batch; None once the proxy has taken it, else why not."""
    process = await conn.create_process(subsystem=AUDIT_SUBSYSTEM, encoding="utf-8")
    for event in batch:
        process.stdin.write(json.dumps(event) + "\n")
    process.stdin.write_eof()
    result = await process.wait(check=False)
    return None if result.exit_status == 0 else str(result.stderr or "refused").strip()

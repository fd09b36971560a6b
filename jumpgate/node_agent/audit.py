"""The node's own audit events (exec with its exit code, shell sessions), sent to the proxy.

The agent reaches the platform only through its tunnel: events wait on disk in an
``audit_spool.AuditSpool`` and are sent in batches on a short-lived ``jumpgate-audit``
channel; the proxy stamps them with the tunnel's tenant and node, which the node cannot
choose. Each event carries an ``event_id`` made once, so a batch sent again after a crash
(delivery is at least once) can be told from new events.
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from jumpgate.protocol.tunnel import AUDIT_SUBSYSTEM

Event = dict[str, Any]


def event(event_type: str, *, outcome: str = "I", **fields: Any) -> Event:
    """One event as the node reports it; the proxy adds tenant and node."""
    return {
        "type": event_type,
        "outcome": outcome,
        "time": datetime.now(UTC).isoformat(),
        "fields": {**fields, "event_id": uuid.uuid4().hex},
    }


class EventSink(Protocol):
    """Where the node's events go: ``audit_spool.AuditSpool`` in the agent."""

    def put(self, item: Event, /) -> None: ...


class AuditRefused(Exception):
    """The proxy did not take a batch; ``str()`` says why."""


def sender(conn: asyncssh.SSHClientConnection) -> Callable[[list[Event]], Awaitable[None]]:
    """How an ``Outbox`` of events reaches the proxy over ``conn``."""

    async def send(batch: list[Event]) -> None:
        process = await conn.create_process(subsystem=AUDIT_SUBSYSTEM, encoding="utf-8")
        for item in batch:
            process.stdin.write(json.dumps(item) + "\n")
        process.stdin.write_eof()
        result = await process.wait(check=False)
        if result.exit_status != 0:
            raise AuditRefused(str(result.stderr or "refused").strip())

    return send

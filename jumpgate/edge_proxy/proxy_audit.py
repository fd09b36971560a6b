"""The proxy's own audit events (session start and end, refusals, login limits) on their way
to the control plane: queued in an outbox and sent in batches, never in a session's way, one
call for many sessions rather than two per session (decision 0017)."""

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.protocol import models, outbox
from jumpgate.protocol.audit import EventType, field_text
from jumpgate.protocol.outbox import Outbox

EVENT_LINGER = 0.5
"""How long the proxy lets audit events gather before sending a batch."""
FIELD_CHARS = 1024
"""The most characters of one string field of the proxy's own audit events."""


class AuditOutbox:
    """The proxy's audit events not yet taken by the control plane."""

    def __init__(self, control: ControlPlaneClient) -> None:
        self._control = control
        self.events: Outbox[models.AuditRecord] = Outbox(replace=stand_in)
        self.sending = asyncio.Lock()  # a batch on its way; the service's ``close`` waits

    def __len__(self) -> int:
        return len(self.events)

    def record(
        self,
        event_type: EventType,
        tenant: str,
        outcome: str,
        /,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> None:
        """Queue an audit event stamped ``at`` (now if not given).

        Its text fields come from requests (user and node names): they are made text any
        store keeps, and bounded. Its ``event_id`` lets the control plane keep one copy of
        an event sent twice (a batch it refused is sent again one event at a time)."""
        clean = {
            k: field_text(v, FIELD_CHARS) if isinstance(v, str) else v for k, v in fields.items()
        }
        self.events.put(
            models.AuditRecord(
                type=event_type,
                tenant=tenant,
                outcome=outcome,
                time=at or datetime.now(UTC),
                fields={**clean, "event_id": uuid.uuid4().hex},
            )
        )

    async def send(self, batch: list[models.AuditRecord]) -> None:
        """Hand ``batch`` to the control plane; ``outbox.Refused`` when it refuses it as it is
        (4xx), so the outbox sends it again event by event, and replaces those refused on
        their own (``stand_in``); any other failure is tried again later."""
        try:
            await self._control.audit(batch)
        except ControlPlaneError as exc:
            if exc.for_good:
                raise outbox.Refused(str(exc)) from exc
            raise

    async def deliver(self) -> None:
        """Send batches as events arrive, until cancelled."""
        await self.events.deliver(self._send_locked, linger=EVENT_LINGER)

    async def _send_locked(self, batch: list[models.AuditRecord]) -> None:
        """Under ``sending``, so stopping never cancels a batch mid-way (it would be sent
        twice by the flush)."""
        async with self.sending:
            await self.send(batch)

    async def flush(self) -> bool:
        """Send everything queued; whether it all went."""
        return await self.events.flush(self.send)


def stand_in(record: models.AuditRecord, reason: str) -> models.AuditRecord:
    """The ``audit.dropped`` event that takes the place of one of the proxy's own events the
    control plane refused for good: its tenant, type, ids and why, never its other fields
    (they may be what was refused). Its id is derived from the refused event's, so a copy
    sent again is kept once."""
    fields: dict[str, str | int | bool | None] = {
        "origin": "proxy",
        "dropped_type": str(record.type),
        "error": field_text(f"refused by the platform: {reason}", 300),
    }
    for name in ("session_id", "server_id"):
        value = record.fields.get(name)
        if isinstance(value, str):
            fields[name] = field_text(value, 128)
    original = record.fields.get("event_id")
    if isinstance(original, str):
        fields["event_id"] = uuid.uuid5(uuid.NAMESPACE_OID, field_text(original, 128)).hex
    return models.AuditRecord(
        type=EventType.AUDIT_DROPPED,
        tenant=record.tenant,
        outcome="W",
        time=record.time,
        fields=fields,
    )

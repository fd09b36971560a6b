"""What the proxy takes of a node's own audit events: per-tunnel budgets, event by event.

A node may report only some event types of itself, and what it sends is bounded and stamped
by the proxy (docs/decisions/0016-node-audit-spool.md):

- **Event by event.** A line that is too long, not JSON, of a type a node may not report, or
  with fields that do not fit, is replaced by an ``audit.dropped`` event (``W``) naming why;
  the rest of the batch is taken. One bad line never refuses a batch: the node would send
  it again and again, and every later event would wait behind it.
- **Times are the proxy's.** A node's time more than ``MAX_SKEW`` from when the proxy received
  the event (or without a time zone) is replaced by the receive time; the node's own is kept
  as the field ``node_time``. A node cannot write events that expire at once or never.
- **Budgets per tunnel.** A token bucket on events and one on bytes, and a cap on concurrent
  audit batches in flight. Over budget, a batch waits for its tokens (at most ``MAX_WAIT``) or is
  answered "try again" (``Tempfail``), counted, with one log line per tunnel and minute.
  The audit store and the proxy's internal pool are shared by every tenant.
"""

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.token_bucket import TokenBucket
from jumpgate.protocol.tunnel import MAX_LINE_BYTES
from jumpgate.protocol.tunnel_messages import Ack, Tempfail

logger = logging.getLogger(__name__)
MAX_SKEW = timedelta(minutes=5)
MAX_WAIT = 5.0
"""The longest a batch over budget waits for its tokens before being answered "try again"."""
NODE_EVENTS = frozenset(
    t.value
    for t in (
        EventType.SESSION_START,
        EventType.SESSION_END,
        EventType.SESSION_JOIN,
        EventType.SESSION_LEAVE,
        EventType.SESSION_RESIZE,
        EventType.EXEC,
        EventType.SCP,
        EventType.SFTP,
        EventType.PORT,
        EventType.SESSION_OVER_BUDGET,
        EventType.SESSION_REJECTED,  # the node's own check of roles, locks, expiry (0034)
        EventType.AUDIT_DROPPED,  # the node's own spool was full
    )
)
"""What a node may say of itself; the proxy reports the rest (its own session events too)."""


@dataclass(frozen=True)
class AuditBudget:
    """How much of the shared audit store one node's tunnel may use."""

    events_per_second: float = 200.0  # sustained events a tunnel may report
    events_burst: float = 1000.0  # events it may report at once (a backlog after an outage)
    bytes_per_second: float = 256 * 1024  # sustained bytes of event lines
    bytes_burst: float = 2 * 1024 * 1024  # bytes at once
    channels: int = 4  # audit batches in flight at once (the agent sends one at a time)


@dataclass
class TunnelAudit:
    """One tunnel's audit budget and what it refused (``/metrics`` and the log)."""

    budget: AuditBudget = field(default_factory=AuditBudget)
    clock: Callable[[], float] = time.monotonic
    channels: int = 0
    over_budget: int = 0  # batches answered "try again"
    dropped: int = 0  # events replaced by ``audit.dropped``
    clamped: int = 0  # events whose time was the node's and is now the proxy's
    logged_at: float = -1e9  # when an over-budget line was last logged

    def __post_init__(self) -> None:
        self._events = TokenBucket(
            self.budget.events_per_second, self.budget.events_burst, self.clock
        )
        self._bytes = TokenBucket(self.budget.bytes_per_second, self.budget.bytes_burst, self.clock)

    def wait_for(self, events: int, size: int) -> float | None:
        """Seconds a batch must wait for its budget, or None if longer than ``MAX_WAIT``
        (then nothing is taken); when it returns a number the tokens are taken."""
        wait = max(self._events.wait_for(events), self._bytes.wait_for(size))
        if wait > MAX_WAIT:
            self.over_budget += 1
            return None
        self._events.take(events)
        self._bytes.take(size)
        return wait

    def exhausted(self) -> bool:
        """True when not even one small event would be taken within ``MAX_WAIT``: the batch
        is refused before it is read, so a flooding node costs the proxy little."""
        wait = max(self._events.wait_for(1), self._bytes.wait_for(1))
        if wait > MAX_WAIT:
            self.over_budget += 1
            return True
        return False

    def too_big(self, size: int) -> bool:
        """True when ``size`` bytes would not be taken within ``MAX_WAIT`` (reading stops)."""
        return self._bytes.wait_for(size) > MAX_WAIT

    def should_log(self) -> bool:
        """One over-budget log line per tunnel and minute, however hard it pushes."""
        now = self.clock()
        if now - self.logged_at < 60:
            return False
        self.logged_at = now
        return True


def dropped(node: models.TunnelNode, reason: str, event: Any = None) -> models.AuditRecord:
    """The ``audit.dropped`` event that stands for a node event the proxy did not take."""
    fields: dict[str, str | int | bool | None] = {
        "server_id": node.host_id,
        "origin": "node",
        "error": reason[:300],
    }
    if isinstance(event, dict):
        if isinstance(event.get("type"), str):
            fields["dropped_type"] = event["type"][:64]
        event_fields = event.get("fields")
        if isinstance(event_fields, dict):
            for name in ("event_id", "session_id", "user", "login"):
                value = event_fields.get(name)
                if isinstance(value, str):
                    fields[name] = value[:128]
    return models.AuditRecord(
        type=EventType.AUDIT_DROPPED,
        tenant=node.tenant,
        outcome="W",
        time=datetime.now(UTC),
        fields=fields,
    )


def record(
    node: models.TunnelNode, line: str, received: datetime, intake: TunnelAudit
) -> models.AuditRecord:
    """The record for one line a node sent: its event, stamped with the tunnel's tenant and
    node and a time within ``MAX_SKEW`` of ``received``, or ``audit.dropped`` saying why."""
    if len(line.encode()) > MAX_LINE_BYTES:
        intake.dropped += 1
        return dropped(node, f"a line is longer than {MAX_LINE_BYTES} bytes")
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):  # deep nesting raises the latter
        intake.dropped += 1
        return dropped(node, "a line is not JSON")
    if not isinstance(event, dict):
        intake.dropped += 1
        return dropped(node, "a line is not a JSON object")
    if event.get("type") not in NODE_EVENTS:
        intake.dropped += 1
        return dropped(node, f"a node may not report {str(event.get('type'))[:64]!r} events", event)
    try:
        fields = {**dict(event.get("fields", {})), "server_id": node.host_id, "origin": "node"}
        fields.pop("tenant", None)
        made = models.AuditRecord(
            type=event["type"],
            tenant=node.tenant,
            outcome=event.get("outcome", "I"),
            time=event.get("time") or received,
            fields=fields,
        )
    except (ValidationError, ValueError, TypeError) as exc:
        intake.dropped += 1
        return dropped(node, f"the event does not fit: {_first_error(exc)}", event)
    time_ = made.time
    if time_.tzinfo is None or abs(time_ - received) > MAX_SKEW:
        intake.clamped += 1
        return made.model_copy(
            update={
                "time": received,
                "fields": {**made.fields, "node_time": str(event["time"])[:64]},
            }
        )
    return made


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"{where}: {first['msg']}"[:200]
    return str(exc)[:200]


async def take(
    control: ControlPlaneClient,
    node: models.TunnelNode,
    intake: TunnelAudit,
    request: int,
    lines: list[str],
) -> Ack | Tempfail:
    """Take a batch of the node's own events (one JSON line each), stamped with its tunnel's
    tenant and node, event by event and within the node's budget: ``Ack`` once recorded,
    else ``Tempfail``; both answer ``request``."""
    if intake.channels >= intake.budget.channels:
        intake.over_budget += 1
        _over_budget(node, intake, "too many audit batches at once")
        return Tempfail(
            id=request,
            reason=f"audit: at most {intake.budget.channels} batches at once: try again",
        )
    intake.channels += 1
    try:
        return await _take_batch(control, node, intake, request, lines)
    finally:
        intake.channels -= 1


async def _take_batch(
    control: ControlPlaneClient,
    node: models.TunnelNode,
    intake: TunnelAudit,
    request: int,
    lines: list[str],
) -> Ack | Tempfail:
    over = Tempfail(id=request, reason="audit: this node is over its audit budget: try again later")
    if intake.exhausted():
        _over_budget(node, intake, "over its audit budget")
        return over
    if not lines:
        return Ack(id=request)
    wait = intake.wait_for(len(lines), sum(len(line) for line in lines))
    if wait is None:
        _over_budget(node, intake, "over its audit budget")
        return over
    if wait:
        await asyncio.sleep(wait)
    received = datetime.now(UTC)
    records = [record(node, line, received, intake) for line in lines]
    refused = sum(r.type == EventType.AUDIT_DROPPED for r in records)
    if refused:
        logger.info("node audit events dropped", extra={"node": node.host_id, "events": refused})
    try:
        await control.audit(records)
    except ControlPlaneError as exc:
        if exc.status >= 500 or exc.status == 0:
            return _unreachable(request, exc)
        return await _one_by_one(control, request, node, intake, records)
    return Ack(id=request)


async def _one_by_one(
    control: ControlPlaneClient,
    request: int,
    node: models.TunnelNode,
    intake: TunnelAudit,
    records: list[models.AuditRecord],
) -> Ack | Tempfail:
    """The control plane refused the batch: send its events one at a time, each one it
    refuses replaced by ``audit.dropped`` (it deduplicates by ``event_id``)."""
    for item in records:
        try:
            await control.audit([item])
        except ControlPlaneError as exc:
            if exc.status >= 500 or exc.status == 0:
                return _unreachable(request, exc)
            intake.dropped += 1
            logger.info(
                "node audit event refused by the platform: dropped",
                extra={"node": node.host_id, "type": item.type, "reason": str(exc)[:300]},
            )
            source = {"type": str(item.type), "fields": item.fields}
            try:
                await control.audit([dropped(node, f"refused by the platform: {exc}", source)])
            except ControlPlaneError as again:
                return Tempfail(id=request, reason=f"audit: not recorded: {again}"[:300])
    return Ack(id=request)


def _unreachable(request: int, exc: ControlPlaneError) -> Tempfail:
    return Tempfail(id=request, reason=f"audit: the platform is out of reach: {exc}"[:300])


def _over_budget(node: models.TunnelNode, intake: TunnelAudit, why: str) -> None:
    if intake.should_log():
        logger.warning(
            "node audit over budget: batches refused for now",
            extra={
                "tenant": node.tenant,
                "node": node.host_id,
                "why": why,
                "refused": intake.over_budget,
            },
        )

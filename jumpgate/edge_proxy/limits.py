"""What keeps one tenant, one address or one user from taking the control plane for itself.

Two mechanisms in front of the control-plane transport, the same whether its handlers run in
this process or as Lambda functions (docs/decisions/0018):

- ``TenantShare``: each tenant's public API calls hold at most ``per_tenant`` of the
  transport's workers at once; the rest wait here, on the event loop, behind their own
  tenant's calls only. A flood of logins against one tenant then costs the others nothing
  but CPU.
- ``LoginGuard``: token buckets on ``/v1/login`` attempts per source address and per user
  (a tenant's user name), so a brute force is refused (429) before it costs a bcrypt check.
  A successful login gives its tokens back: the limits are for failures, not for people
  who know their password. Buckets live in this proxy's memory, so on a fleet each proxy
  limits on its own.
"""

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jumpgate.edge_proxy.events import Event, Invoke
from jumpgate.edge_proxy.lambda_invoke import ControlPlaneUnavailable
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.names import tenant_from_host

LOGIN_PATH = "/v1/login"
"""The route the login limits apply to, exactly as the control plane matches it (a path
that differs in any byte is not the login route there either)."""
AUDIT_EVERY = 60.0
"""Seconds between two audit events for one limited address or user: a flood leaves a few
events that count the refusals, not one per refusal."""


class TokenBuckets:
    """Token buckets by key: ``burst`` tokens each, refilled at ``rate`` a second.

    At most ``capacity`` keys are kept, least recently used dropped first (a dropped key
    starts full again: under a flood of distinct keys the limit forgets, it never grows).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._capacity = capacity
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _level(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 if there was one, else the seconds until there is."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens = self._level(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            return (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)
        return 0.0

    def give_back(self, key: str) -> None:
        """Return a token taken for ``key`` (the attempt it paid for succeeded)."""
        if not self.enabled or key not in self._buckets:
            return
        now = self._clock()
        self._buckets[key] = (min(float(self.burst), self._level(key, now) + 1.0), now)


@dataclass(frozen=True)
class Refusal:
    """A login refused before it reached the control plane."""

    retry_after: int  # whole seconds, at least 1
    detail: str  # one line for people


@dataclass(frozen=True)
class Admission:
    """A login let through; ``LoginGuard.settle`` gives its tokens back if it succeeds."""

    source: str
    user_key: str


Record = Callable[..., None]
"""Queues an audit event: ``record(event_type, tenant, outcome, **fields)`` (the proxy's
outbox to the control plane)."""


class LoginGuard:
    """Per-source and per-user limits on login attempts, with their audit events."""

    def __init__(
        self,
        public_addr: str,
        *,
        per_source: TokenBuckets,
        per_user: TokenBuckets,
        record: Record | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._public_addr = public_addr
        self.per_source = per_source
        self.per_user = per_user
        self._record = record
        self._clock = clock
        self._audited: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()

    def admit(self, source: str, host: str, body: bytes) -> Admission | Refusal:
        """Whether a login attempt from ``source`` to ``host`` with ``body`` may proceed."""
        tenant = tenant_from_host(host, self._public_addr) or ""
        user = _user_of(body)
        user_key = f"{tenant}/{user}" if user else ""
        wait = self.per_source.take(source)
        if wait:
            self._audit(tenant, "source", source, user, source)
            seconds = max(1, math.ceil(wait))
            return Refusal(
                seconds, f"too many login attempts from {source}: try again in {seconds} s"
            )
        wait = self.per_user.take(user_key) if user_key else 0.0
        if wait:
            self.per_source.give_back(source)  # refused for the user: not the address's fault
            self._audit(tenant, "user", user_key, user, source)
            seconds = max(1, math.ceil(wait))
            return Refusal(
                seconds, f"too many login attempts for user {user!r}: try again in {seconds} s"
            )
        return Admission(source, user_key)

    def settle(self, admitted: Admission, status: int) -> None:
        """A login that succeeded does not count against its address or user."""
        if status < 400:
            self.per_source.give_back(admitted.source)
            if admitted.user_key:
                self.per_user.give_back(admitted.user_key)

    def _audit(self, tenant: str, limit: str, key: str, user: str, source: str) -> None:
        """One event per limited address or user per ``AUDIT_EVERY``, counting refusals."""
        if self._record is None or not tenant:
            return
        now = self._clock()
        slot = (tenant, limit, key)
        last, refused = self._audited.get(slot, (-math.inf, 0))
        refused += 1
        if now - last < AUDIT_EVERY:
            self._audited[slot] = (last, refused)
            return
        self._audited[slot] = (now, 0)
        self._audited.move_to_end(slot)
        while len(self._audited) > 10_000:
            self._audited.popitem(last=False)
        self._record(
            EventType.USER_LOGIN_LIMITED,
            tenant,
            "W",
            user=user[:128],
            remote_addr=source,
            limit=limit,
            refused=refused,
            error="too many login attempts "
            + ("from this address" if limit == "source" else "for this user"),
        )


def _user_of(body: bytes) -> str:
    """The ``user`` a login body names, or "" (the control plane answers a bad body)."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return ""
    user = parsed.get("user") if isinstance(parsed, dict) else None
    return user[:128] if isinstance(user, str) else ""


class TenantShare:
    """An ``Invoke`` that lets each tenant's calls hold at most ``per_tenant`` workers.

    The tenant is the one the ``Host`` names (as the control plane reads it); requests that
    name none share one slot set. Semaphores exist only while a tenant has calls in flight.
    """

    def __init__(self, invoke: Invoke, public_addr: str, per_tenant: int) -> None:
        if per_tenant < 1:
            raise ValueError("per_tenant must be at least 1")
        self._invoke = invoke
        self._public_addr = public_addr
        self.per_tenant = per_tenant
        self._slots: dict[str, tuple[asyncio.Semaphore, int]] = {}  # semaphore, users
        self._waiting: set[asyncio.Task[Any]] = set()
        self._closed = False

    def tenant_of(self, event: Event) -> str:
        host = str((event.get("headers") or {}).get("host", ""))
        return tenant_from_host(host, self._public_addr) or ""

    def waiting(self, tenant: str) -> int:
        """Calls of ``tenant`` in flight or waiting (for tests and metrics)."""
        return self._slots.get(tenant, (None, 0))[1]

    def close(self) -> None:
        """Stopping: calls still waiting for their tenant's turn are cancelled (a flood queued
        behind one tenant's share must not hold the process past its drain)."""
        self._closed = True
        for task in list(self._waiting):
            task.cancel()

    async def __call__(self, event: Event) -> Event:
        if self._closed:
            raise ControlPlaneUnavailable("the platform is stopping: try again shortly")
        tenant = self.tenant_of(event)
        semaphore, users = self._slots.get(tenant, (None, 0))
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.per_tenant)
        self._slots[tenant] = (semaphore, users + 1)
        task = asyncio.current_task()
        try:
            if task is not None:
                self._waiting.add(task)
            try:
                await semaphore.acquire()
            finally:
                self._waiting.discard(task)
            try:
                return await self._invoke(event)
            finally:
                semaphore.release()
        finally:
            semaphore, users = self._slots[tenant]
            if users == 1:
                del self._slots[tenant]
            else:
                self._slots[tenant] = (semaphore, users - 1)

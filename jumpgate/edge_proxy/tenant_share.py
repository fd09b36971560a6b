"""What keeps one tenant from taking the control plane's workers for itself.

``TenantShare``, in front of the control-plane transport (the same whether its handlers run
in this process or as Lambda functions, docs/decisions/0018): each tenant's calls run in two
lanes, logins and signups (bcrypt) in one, everything else (``/v1/trust``, joins, signed
calls) in the other; each lane holds at most a few of the transport's workers at once, and at
most ``queue`` more calls wait behind them, on the event loop, behind their own lane only,
served a source at a time; one source holds at most a few of a lane's places. Beyond that a
call is refused at once (``TenantBusy``). A login flood against one tenant then costs the
others nothing but CPU, and costs its own other calls nothing either.
"""

import asyncio
from collections import deque
from typing import Any

from jumpgate.edge_proxy.events import Event, Invoke
from jumpgate.edge_proxy.lambda_invoke import ControlPlaneUnavailable
from jumpgate.edge_proxy.limits import BCRYPT_ROUTES, Refusal, source_key
from jumpgate.protocol.names import tenant_from_host


class TenantBusy(Exception):
    """A tenant's lane has as many calls waiting as it may: this one is refused at once."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


def lane_of(event: Event) -> str:
    """``login`` for the calls that run bcrypt, ``api`` for every other."""
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method", ""))
    path = str(event.get("rawPath", ""))
    return "login" if (method.upper(), path) in BCRYPT_ROUTES else "api"


class _Lane:
    """One tenant lane's workers, and the calls waiting for them queued per source and served
    in turn: one source's queue does not delay another's calls by more than one call each.

    A plain FIFO let one address that held 8 places put 8 calls ahead of everyone else's
    (round 2 of the review); taking the sources in turn puts at most one.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.running = 0
        self.users = 0  # running and waiting
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}  # in turn order

    async def acquire(self, source: str) -> None:
        if self.running < self.workers and not self._queues:
            self.running += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(source, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # its turn came as it was cancelled: pass the worker on
            else:
                queue = self._queues.get(source)
                if queue is not None and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._queues[source]
            raise

    def release(self) -> None:
        """A worker is free: the next source in turn gets it, or it goes back."""
        while self._queues:
            source = next(iter(self._queues))
            queue = self._queues.pop(source)
            turn = queue.popleft()
            if queue:
                self._queues[source] = queue  # to the back of the turn
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1


class TenantShare:
    """An ``Invoke`` that lets each tenant's calls hold at most a few workers, per lane.

    The tenant is the one the ``Host`` names (as the control plane reads it); requests that
    name none share one lane pair. A lane (``lane_of``) holds ``per_tenant`` workers
    (``login_per_tenant`` for the login lane), and at most ``queue`` calls wait behind them:
    the queue is keyed on a name the caller chooses, so it must not grow without bound. And
    one source (``source_key`` of the event's ``sourceIp``) holds at most ``per_source`` of
    a lane's places, running or waiting, so no single address fills a tenant's lane and
    the others' calls still find a place (the proxy's own calls never come through here);
    waiting calls are served a source at a time in turn (``_Lane``), so they are not stuck
    behind one address's calls either. Lanes and counts exist only while they have calls in
    flight.
    """

    def __init__(
        self,
        invoke: Invoke,
        public_addr: str,
        per_tenant: int,
        *,
        login_per_tenant: int = 1,
        queue: int = 64,
        per_source: int = 8,
    ) -> None:
        if per_tenant < 1 or login_per_tenant < 1:
            raise ValueError("per_tenant and login_per_tenant must be at least 1")
        if queue < 0:
            raise ValueError("queue must be 0 or more")
        if per_source < 1:
            raise ValueError("per_source must be at least 1")
        self._invoke = invoke
        self._public_addr = public_addr
        self.per_tenant = per_tenant
        self.login_per_tenant = login_per_tenant
        self.queue = queue
        self.per_source = per_source
        self._slots: dict[tuple[str, str], _Lane] = {}
        self._sources: dict[tuple[str, str, str], int] = {}  # (tenant, lane, source): places
        self._waiting: set[asyncio.Task[Any]] = set()
        self._closed = False

    def tenant_of(self, event: Event) -> str:
        host = str((event.get("headers") or {}).get("host", ""))
        return tenant_from_host(host, self._public_addr) or ""

    @staticmethod
    def source_of(event: Event) -> str:
        """The source a call counts against: its address, or the IPv6 /64 it is in."""
        http = (event.get("requestContext") or {}).get("http") or {}
        return source_key(str(http.get("sourceIp", "")))

    def waiting(self, tenant: str, lane: str = "api") -> int:
        """Calls of ``tenant``'s ``lane`` in flight or waiting (for tests and metrics)."""
        held = self._slots.get((tenant, lane))
        return held.users if held is not None else 0

    def close(self) -> None:
        """Stopping: calls still waiting for their tenant's turn are cancelled (a flood queued
        behind one tenant's share must not hold the process past its drain)."""
        self._closed = True
        for task in list(self._waiting):
            task.cancel()

    async def __call__(self, event: Event) -> Event:
        if self._closed:
            raise ControlPlaneUnavailable("the platform is stopping: try again shortly")
        tenant, lane_name, source = self.tenant_of(event), lane_of(event), self.source_of(event)
        workers = self.login_per_tenant if lane_name == "login" else self.per_tenant
        key, mine = (tenant, lane_name), (tenant, lane_name, source)
        what = "logins" if lane_name == "login" else "calls"
        lane = self._slots.get(key)
        if lane is not None and lane.users >= workers + self.queue:
            raise TenantBusy(
                Refusal(1, f"too many {what} waiting for this tenant: try again in 1 s")
            )
        held = self._sources.get(mine, 0)
        if held >= self.per_source:
            raise TenantBusy(
                Refusal(
                    1,
                    f"too many {what} from {source or 'one address'} waiting for this tenant:"
                    " try again in 1 s",
                )
            )
        if lane is None:
            lane = self._slots[key] = _Lane(workers)
        lane.users += 1
        self._sources[mine] = held + 1
        task = asyncio.current_task()
        try:
            if task is not None:
                self._waiting.add(task)
            try:
                await lane.acquire(source)
            finally:
                self._waiting.discard(task)
            try:
                return await self._invoke(event)
            finally:
                lane.release()
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._slots[key]
            held = self._sources[mine]
            if held == 1:
                del self._sources[mine]
            else:
                self._sources[mine] = held - 1

"""What one session, and one user, may make of the node's audit events
(docs/decisions/0016-node-audit-spool.md, second review).

Every SFTP or scp operation is an audited event, written to the node's spool and sent to the
platform at the rate the proxy takes from a node (``edge_proxy.audit_intake.AuditBudget``:
200 events/s, 256 KiB/s). A user pipelining cheap requests (renames of missing 2,000-character
paths) made 3.5 MiB/s of events, so the spool filled and other users' events waited for
minutes, then were dropped.

A session's transfer events are held to two token buckets (events and bytes), and so are all
the sessions of one user together. A session that goes over either is ended, with a
``session.over_budget`` ``W`` event: what it did is still audited, every event of it written,
and it does nothing more. The budget is well above what real use makes (an sftp upload of
thousands of small files, one event each) and at most half the node's drain in bytes, so one
session cannot outrun the platform for long. Lifecycle events (``audit.LIFECYCLE``) are never
counted: they are few per session and go in their own lane of the spool.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from jumpgate.node_agent import audit as events
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.token_bucket import TokenBucket

logger = logging.getLogger(__name__)
Stop = Callable[[str], None]
OVER_BUDGET = "the session went over its audit budget"
"""The reason a session ended over its budget (``session.end`` ``reason``)."""
KEEP_USERS = 1000
"""Users' budgets kept before the idle ones (buckets full again) are forgotten."""


@dataclass(frozen=True)
class Budget:
    """Token buckets on the transfer events of a session (or of a user's sessions)."""

    events_per_second: float = 200.0  # sustained events: the proxy takes 200/s of a node
    events_burst: float = 5000.0  # at once: an sftp put -r of 5,000 small files
    bytes_per_second: float = 128 * 1024  # sustained bytes: half the proxy's 256 KiB/s
    bytes_burst: float = 4 * 1024 * 1024  # at once: about 10,000 ordinary sftp events


SESSION = Budget()
USER = Budget(events_burst=10_000, bytes_per_second=192 * 1024, bytes_burst=8 * 1024 * 1024)
"""All of one user's sessions together: more than one session, less than the node's drain."""


@dataclass
class _Buckets:
    events: TokenBucket
    bytes: TokenBucket

    @classmethod
    def of(cls, budget: Budget, clock: Callable[[], float]) -> "_Buckets":
        return cls(
            TokenBucket(budget.events_per_second, budget.events_burst, clock),
            TokenBucket(budget.bytes_per_second, budget.bytes_burst, clock),
        )

    def take(self, size: int) -> bool:
        taken = [self.events.take(1), self.bytes.take(size)]
        return all(taken)


class SessionAudit:
    """One session's event sink: lifecycle events pass; the others are counted against the
    session's and its user's budgets, and the first one over either ends the session."""

    def __init__(
        self,
        sink: events.EventSink,
        who: dict[str, str],
        stop: Stop,
        own: _Buckets,
        user: _Buckets,
        budgets: tuple[Budget, Budget],
    ) -> None:
        self._sink = sink
        self._who = who
        self._stop = stop
        self._own, self._user = own, user
        self._budgets = budgets
        self.exceeded = False

    def put(self, item: events.Event, /) -> None:
        if item.get("type") in events.LIFECYCLE or self.exceeded:
            self._sink.put(item)
            return
        size = len(json.dumps(item, separators=(",", ":"))) + 1
        within = [self._own.take(size), self._user.take(size)]
        self._sink.put(item)  # it happened: it is audited, over budget or not
        if not all(within):
            self._exceed("session" if not within[0] else "user")

    def _exceed(self, which: str) -> None:
        self.exceeded = True
        budget = self._budgets[0] if which == "session" else self._budgets[1]
        logger.warning("session ended: over its audit budget", extra={**self._who, "budget": which})
        self._sink.put(
            events.event(
                EventType.SESSION_OVER_BUDGET,
                outcome="W",
                **self._who,
                budget=which,
                events_per_second=budget.events_per_second,
                bytes_per_second=budget.bytes_per_second,
                error=(
                    f"{OVER_BUDGET} (the {which}'s: {budget.events_per_second:g} events/s, "
                    f"{budget.bytes_per_second / 1024:g} KiB/s, with a burst): ended, so that "
                    "nothing it does goes unaudited"
                ),
            )
        )
        self._stop(OVER_BUDGET)


class Budgets:
    """The agent's budgets: one per session made, one per user kept while it is spent."""

    def __init__(
        self,
        session: Budget = SESSION,
        user: Budget = USER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_budget, self.user_budget, self.clock = session, user, clock
        self._users: dict[str, _Buckets] = {}

    def __len__(self) -> int:
        return len(self._users)

    def _user(self, name: str) -> _Buckets:
        buckets = self._users.get(name)
        if buckets is None:
            if len(self._users) >= KEEP_USERS:
                idle = [u for u, b in self._users.items() if b.events.full() and b.bytes.full()]
                for forgotten in idle:
                    del self._users[forgotten]
            buckets = self._users[name] = _Buckets.of(self.user_budget, self.clock)
        return buckets

    def session(self, sink: events.EventSink, who: dict[str, str], stop: Stop) -> SessionAudit:
        """The sink for one session of ``who``; ``stop(reason)`` ends it."""
        return SessionAudit(
            sink,
            who,
            stop,
            _Buckets.of(self.session_budget, self.clock),
            self._user(who.get("user", "")),
            (self.session_budget, self.user_budget),
        )

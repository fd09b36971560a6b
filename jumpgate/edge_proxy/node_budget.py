"""What one node may ask of the proxy on its tunnel, besides its audit (``audit_intake``).

A node's credentials sit on a machine a tenant runs; if it is taken over, its key must not
let it slow every other tenant down (decision 0019). Each of its requests costs the proxy, or
the control plane every tenant shares, something; each is bounded per node:

- **Presence.** One control channel per tunnel connection (``tunnel_control``), and at
  most one presence write per ``presence_every`` seconds: a change sooner than that waits,
  and a later one replaces it (coalesced), so the node's latest word is written, once. A
  heartbeat (or a line that is no request) beyond ``heartbeat_burst`` at once and
  ``heartbeats_per_second`` after, over all the node's channels, ends the channel, saying
  so: the proxy's event loop serves every tenant, and merely pausing the reader still let a
  flooding node keep it busy (measured: a core). The agent sends one line when what it says
  changes, every few seconds at most, so it never comes near.
- **Renewals.** One at a time, ``renewal_burst`` at once and ``renewals_per_minute`` after
  that (an agent renews every few hours); beyond that the request is refused with one line
  saying when to try again. Each renewal is a signature with the tenant's host CA.
- **Channels and connections.** At most ``channels_per_connection`` session and recording
  channels open at once on one tunnel connection, and ``connections_per_node`` tunnel
  connections per node (the agent keeps one, two while it reconnects).
- **Failed logins.** Each tunnel login the control plane refuses costs its source address a
  token (``auth_failure_burst`` at once, ``auth_failures_per_second`` after); a source out
  of tokens is refused without asking the control plane, and the refusals are logged at most
  once a second. A login that succeeds gives its token back, as with user logins.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jumpgate.edge_proxy.connections import LogThrottle
from jumpgate.edge_proxy.limits import TokenBuckets
from jumpgate.protocol import models


@dataclass(frozen=True)
class TunnelLimits:
    """What one node, one tunnel connection and one source may ask of the tunnel front."""

    presence_every: float = 5.0  # seconds between two presence writes for one node
    heartbeats_per_second: float = 5.0  # heartbeat lines one node may send, sustained
    heartbeat_burst: int = 20  # heartbeat lines one node may send at once
    renewals_per_minute: float = 1.0  # host-certificate renewals one node may ask, sustained
    renewal_burst: int = 3  # renewals one node may ask at once before that rate
    # signed trust documents pushed to one node (one per hello, and per change): each is a
    # control-plane call and a host CA signature, and hellos are the node's to send
    trust_documents_per_minute: float = 2.0
    trust_document_burst: int = 8  # pushed at once before that rate (4 connections, twice)
    channels_per_connection: int = 8  # subsystems + recording channels open on one connection
    connections_per_node: int = 4  # tunnel connections one node may hold at once
    auth_failures_per_second: float = 2.0  # refused tunnel logins one source may make, sustained
    auth_failure_burst: int = 30  # refused tunnel logins one source may make at once

    def __post_init__(self) -> None:
        if self.presence_every < 0 or self.renewals_per_minute <= 0:
            raise ValueError("presence_every must be 0 or more, renewals_per_minute positive")
        caps = (
            self.heartbeat_burst,
            self.renewal_burst,
            self.channels_per_connection,
            self.connections_per_node,
            self.auth_failure_burst,
        )
        if min(caps) < 1 or min(self.auth_failures_per_second, self.heartbeats_per_second) <= 0:
            raise ValueError("tunnel caps and rates must be positive")


@dataclass
class NodeBudget:
    """One node's share of the tunnel front, over all its connections."""

    limits: TunnelLimits
    clock: Callable[[], float] = time.monotonic
    connections: int = 0  # tunnel connections authenticated and still open
    renewing: bool = False  # a renewal is waiting for the control plane
    reported: models.Presence | None = None  # the presence last written for this node
    pending: models.Presence | None = None  # a change waiting for its turn
    flushing: bool = False  # a task will write ``pending`` when its turn comes
    written_at: float = -math.inf  # when presence was last written
    renewals: TokenBuckets = field(init=False)
    beats: TokenBuckets = field(init=False)
    trusts: TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        self.beats = TokenBuckets(
            self.limits.heartbeats_per_second,
            self.limits.heartbeat_burst,
            capacity=1,
            clock=self.clock,
        )
        self.renewals = TokenBuckets(
            self.limits.renewals_per_minute / 60,
            self.limits.renewal_burst,
            capacity=1,
            clock=self.clock,
        )
        self.trusts = TokenBuckets(
            self.limits.trust_documents_per_minute / 60,
            self.limits.trust_document_burst,
            capacity=1,
            clock=self.clock,
        )

    def presence_wait(self, presence: models.Presence) -> float | None:
        """``None`` if ``presence`` is what was last written (nothing to do, and a change
        waiting is dropped: the node took it back); else the seconds until it may be
        written, 0 for now. A change that must wait is kept in ``pending``."""
        if presence == self.reported:
            self.pending = None
            return None
        wait = max(0.0, self.written_at + self.limits.presence_every - self.clock())
        if wait:
            self.pending = presence
        return wait

    def wrote(self, presence: models.Presence) -> None:
        """``presence`` was written just now."""
        self.reported, self.written_at = presence, self.clock()
        if self.pending == presence:
            self.pending = None

    def beat_wait(self) -> float:
        """0 if a heartbeat line is within budget (its token taken), else the seconds until
        it would be."""
        return self.beats.take("beat")

    def renewal_wait(self) -> int:
        """0 if a renewal may go now (its token taken), else whole seconds to wait."""
        wait = self.renewals.take("renew")
        return max(1, math.ceil(wait)) if wait else 0

    def trust_wait(self) -> float:
        """0 if a trust document may be fetched for the node now (its token taken), else the
        seconds until one may."""
        return self.trusts.take("trust")

    def gone(self) -> None:
        """The node's tunnel went down (or a write failed): presence is written again, at
        once, when it comes back (a node seen online late would be refused by other proxies)."""
        self.reported, self.pending, self.written_at = None, None, -math.inf


class NodeBudgets:
    """The tunnel front's budgets: one per node, and the failed-login tokens per source."""

    def __init__(
        self, limits: TunnelLimits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or TunnelLimits()
        self._clock = clock
        self._nodes: dict[tuple[str, str], NodeBudget] = {}  # one per joined node that came
        self.auth_failures = TokenBuckets(
            self.limits.auth_failures_per_second, self.limits.auth_failure_burst, clock=clock
        )
        self.refusals = LogThrottle()  # "tunnel refused" lines: one a second at most

    def of(self, tenant: str, host_id: str) -> NodeBudget:
        """The budget of a node that authenticated (so there is one per real node)."""
        key = (tenant, host_id)
        budget = self._nodes.get(key)
        if budget is None:
            budget = self._nodes[key] = NodeBudget(self.limits, self._clock)
        return budget

"""Bounds on the proxy's connections: how many one source address may hold, and how long a
connection may take to say who it is (decision 0019).

Each listener (web 3080, users' SSH 3023, node tunnels 3024) has a ``SourceGate``: a
connection is admitted at accept, before any TLS or SSH work, unless its source address
already holds ``max_per_source`` connections there, or ``max_unauthenticated_per_source``
that have not yet got past their handshake (an HTTPS request head, an SSH login). A listener
holds at most ``max_unauthenticated`` such connections from all sources together; when they
are all taken, a newcomer whose source holds fewer than the most takes the place of the
oldest handshake of a source holding the most, which is cut, and only a newcomer from a
source holding as many as any is refused. A refused connection is closed at once, logged and
counted; nothing else is spent on it. This is OpenSSH's ``MaxStartups`` (fair to sources
where it drops at random) and Teleport's ``connection_limits.max_connections``. A source is
an IPv4 address, or an IPv6 /64 (one host is routinely given a whole /64, so counting per
/128 would give it 2**64 quotas); an IPv4-mapped IPv6 address counts as its IPv4 address.

``ChannelSlots`` caps the channels one user connection holds open at once (sessions, and
forwarded ``direct-tcpip`` channels), as OpenSSH's ``MaxSessions``: each one spliced to a
node costs the node a connection.

The HTTPS front's deadlines are in ``https_bounds``.
"""

import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """What the proxy's listeners allow one source address, and how long a handshake may take."""

    max_per_source: int = 4096  # live connections one address may hold on one listener
    max_unauthenticated_per_source: int = 512  # of those, still in TLS/SSH handshake or login
    header_timeout: float = 10.0  # seconds an HTTPS client has to send a complete request head
    body_timeout: float = 20.0  # seconds an HTTPS client has to send a request's body
    idle_timeout: float = 20.0  # seconds an HTTPS keep-alive connection may wait between requests
    tls_handshake_timeout: float = 10.0  # seconds for the HTTPS TLS handshake
    login_grace: float = 30.0  # seconds an SSH client has to authenticate (LoginGraceTime)
    max_unauthenticated: int = 2048  # handshakes one listener holds from all sources together
    max_sessions_per_connection: int = 10  # session channels open at once on one user connection
    max_forwards_per_connection: int = 64  # direct-tcpip channels open at once on one connection

    def __post_init__(self) -> None:
        caps = (
            self.max_per_source,
            self.max_unauthenticated_per_source,
            self.max_unauthenticated,
            self.max_sessions_per_connection,
            self.max_forwards_per_connection,
        )
        if min(caps) < 1:
            raise ValueError("connection caps must be at least 1")
        timeouts = (self.header_timeout, self.body_timeout, self.idle_timeout)
        if min(*timeouts, self.tls_handshake_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.login_grace <= 0:
            raise ValueError("the login grace time must be positive")


def source_key(peer: Any) -> str:
    """Which source ``peer`` (a socket address) counts as: an IPv4 address, or an IPv6 /64
    (an IPv4-mapped IPv6 address is its IPv4 address)."""
    host = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        bare = ipaddress.IPv6Address(int(address))  # no scope id: fe80::1%eth0 is fe80::/64
        return str(ipaddress.IPv6Network((bare, 64), strict=False))
    return str(address)


@dataclass
class LogThrottle:
    """At most one line a second for one kind of refusal: an attacker's flood of refused
    connections or channels must not become a flood of log lines (the counters count all)."""

    every: float = 1.0  # seconds between lines
    _next: float = 0.0
    _unlogged: int = 0

    def due(self) -> int | None:
        """The refusals not logged since the last line, if a line is due now; else ``None``."""
        now = time.monotonic()
        if now < self._next:
            self._unlogged += 1
            return None
        self._next = now + self.every
        unlogged, self._unlogged = self._unlogged, 0
        return unlogged


_CHANNEL_REFUSALS = LogThrottle()  # all connections' channel refusals, one line a second


def _nothing() -> None:
    """An admission's ``abort`` when its caller gave none (tests of the gate alone)."""


@dataclass(eq=False)
class Admission:
    """One admitted connection's place in its gate: unauthenticated until ``authenticated``,
    given back by ``release`` (both idempotent). ``abort`` cuts the connection, when the
    gate drops it to make room (``SourceGate.admit``)."""

    gate: "SourceGate"
    source: str
    abort: Callable[[], None] = _nothing
    proven: bool = False
    released: bool = False

    def authenticated(self) -> None:
        """The connection got past its handshake: it counts only against the total now."""
        if not self.proven and not self.released:
            self.proven = True
            self.gate.settled(self)

    def release(self) -> None:
        """The connection is gone."""
        if self.released:
            return
        self.released = True
        gate = self.gate
        if not self.proven:
            gate.settled(self)
        gate.live[self.source] -= 1
        if gate.live[self.source] <= 0:
            del gate.live[self.source]


@dataclass
class SourceGate:
    """Counts one listener's connections per source, and its handshakes in all; refuses those
    over a source's caps, and when the listener's handshakes are all taken, makes room for a
    source holding fewer than the most by dropping the oldest handshake of one holding the
    most (an attacker's, by then), refusing the newcomer only when its own source holds as
    many as any.

    Round 2 of the review: four addresses, each at its per-source cap, filled the listener and
    every newcomer was refused. Refusing newcomers is what the attacker wants; OpenSSH's
    ``MaxStartups`` drops them at random instead, which still spares the attacker's old
    connections. Dropping the heaviest source's oldest keeps the places shared out evenly
    among the sources asking (max-min fair): one address, or a few, can no longer hold them
    all, and a newcomer from a light source is only ever dropped after every older handshake
    of the sources holding as many as its own. Each step is O(1).
    """

    listener: str  # web | ssh | tunnel: the metric label and what the log line names
    limits: ConnectionLimits
    refused: Counter[str]  # refusals and drops by listener, shared for /metrics
    live: Counter[str] = field(default_factory=Counter)
    unauthenticated: Counter[str] = field(default_factory=Counter)
    unauthenticated_total: int = 0  # handshakes in progress, all sources
    throttle: LogThrottle = field(default_factory=LogThrottle)
    drops: LogThrottle = field(default_factory=LogThrottle)  # for the "connection dropped" lines
    # handshakes in progress by source, oldest first; and sources by how many they hold, in
    # the order they came to hold that many (so the heaviest is found without a scan)
    _pending: dict[str, dict[Admission, None]] = field(default_factory=dict)
    _holding: dict[int, dict[str, None]] = field(default_factory=dict)
    _most: int = 0

    def admit(self, peer: Any, abort: Callable[[], None] = _nothing) -> Admission | None:
        """An admission for a connection from ``peer`` (a socket address), which ``abort``
        cuts if the gate drops it later; or ``None`` (and a log line) when its source is over
        a cap, or the listener is full and its source holds as many handshakes as any."""
        source = source_key(peer)
        limits = self.limits
        if (
            self.live[source] >= limits.max_per_source
            or self.unauthenticated[source] >= limits.max_unauthenticated_per_source
        ):
            self._refuse(source, "connection refused: too many from one source")
            return None
        if self.unauthenticated_total >= limits.max_unauthenticated:
            victim = self._victim(source)
            if victim is None:
                why = "connection refused: too many unauthenticated connections on this listener"
                self._refuse(source, why)
                return None
            self._drop(victim, source)
        admitted = Admission(self, source, abort)
        self.live[source] += 1
        self._move(source, +1)
        self._pending.setdefault(source, {})[admitted] = None
        self.unauthenticated_total += 1
        return admitted

    def settled(self, admitted: Admission) -> None:
        """``admitted`` is no longer a handshake (authenticated, or gone)."""
        source = admitted.source
        pending = self._pending.get(source, {})
        pending.pop(admitted, None)
        if not pending:
            self._pending.pop(source, None)
        self._move(source, -1)
        self.unauthenticated_total -= 1

    def _move(self, source: str, by: int) -> None:
        """Count one handshake more or less for ``source``, keeping ``_holding`` and ``_most``."""
        before = self.unauthenticated[source]
        after = before + by
        if before:
            holders = self._holding[before]
            del holders[source]
            if not holders:
                del self._holding[before]
        if after > 0:
            self.unauthenticated[source] = after
            self._holding.setdefault(after, {})[source] = None
            self._most = max(self._most, after)
        else:
            del self.unauthenticated[source]
        while self._most and self._most not in self._holding:
            self._most -= 1

    def _victim(self, newcomer: str) -> Admission | None:
        """The handshake to drop for a newcomer from ``newcomer`` on a full listener: the
        oldest of the source that came first to hold the most, if that is more than the
        newcomer's source holds; else none (the newcomer is refused)."""
        if self._most <= self.unauthenticated[newcomer]:
            return None
        heaviest = next(iter(self._holding[self._most]))
        return next(iter(self._pending[heaviest]))

    def _drop(self, victim: Admission, newcomer: str) -> None:
        self.refused[self.listener] += 1
        victim.release()
        victim.abort()
        unlogged = self.drops.due()
        if unlogged is not None:
            logger.warning(
                "connection dropped: listener full, the oldest handshake of the source"
                " holding the most makes room for another",
                extra={
                    "listener": self.listener,
                    "source": victim.source,
                    "newcomer": newcomer,
                    "unauthenticated": self.unauthenticated[victim.source],
                    "unauthenticated_total": self.unauthenticated_total,
                    "dropped_unlogged": unlogged,  # since the last line (one a second at most)
                },
            )

    def _refuse(self, source: str, why: str) -> None:
        self.refused[self.listener] += 1
        unlogged = self.throttle.due()
        if unlogged is not None:
            logger.warning(
                why,
                extra={
                    "listener": self.listener,
                    "source": source,
                    "live": self.live[source],
                    "unauthenticated": self.unauthenticated[source],
                    "unauthenticated_total": self.unauthenticated_total,
                    "refused_unlogged": unlogged,  # since the last line (one a second at most)
                },
            )


@dataclass
class ChannelSlots:
    """The channels of one kind open at once on one SSH connection, capped (``MaxSessions``).

    ``take`` claims a slot when a channel is asked for, before any work is done for it, and
    raises the SSH open failure the client is shown when none is free; the slot comes back
    by the returned callable (idempotent), when the channel closes or its opening fails.
    """

    kind: str  # sessions | forwarded channels: what the refusal names
    limit: int  # how many may be open at once
    held: int = 0

    def take(self) -> Callable[[], None]:
        self.claim()
        given: list[bool] = []

        def give_back() -> None:
            if not given:
                given.append(True)
                self.release()

        return give_back

    def claim(self) -> None:
        """``take`` for an owner that gives the slot back itself, once (``release``): a
        channel held for a connection's life keeps no callable for it."""
        if self.held >= self.limit:
            unlogged = _CHANNEL_REFUSALS.due()
            if unlogged is not None:
                logger.info(
                    "channel refused: too many on one connection",
                    extra={"kind": self.kind, "limit": self.limit, "refused_unlogged": unlogged},
                )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"too many {self.kind} on this connection (at most {self.limit} open at once):"
                " close one, or open another connection",
            )
        self.held += 1

    def release(self) -> None:
        self.held -= 1


S = TypeVar("S", bound=asyncssh.SSHServer)


def gated(factory: Callable[[], S], gate: SourceGate) -> Callable[[], S]:
    """An asyncssh ``server_factory`` whose servers are counted by ``gate``.

    asyncssh has no accept hook, and the server objects must stay the proxy's own classes
    (routing finds them with ``get_owner``), so the three callbacks that mark a connection's
    life are wrapped on each instance: ``connection_made`` admits or aborts it before the
    SSH version is sent, ``auth_completed`` marks it authenticated, ``connection_lost``
    releases it.
    """

    def make() -> S:
        server = factory()
        made, completed, lost = (
            server.connection_made,
            server.auth_completed,
            server.connection_lost,
        )
        admission: list[Admission] = []

        def connection_made(conn: asyncssh.SSHServerConnection) -> None:
            admitted = gate.admit(conn.get_extra_info("peername"), conn.abort)
            if admitted is None:
                conn.abort()
                return
            admission.append(admitted)
            made(conn)

        def auth_completed() -> None:
            for admitted in admission:
                admitted.authenticated()
            completed()

        def connection_lost(exc: Exception | None) -> None:
            for admitted in admission:
                admitted.release()
            if admission:
                lost(exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.auth_completed = auth_completed  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        return server

    return make

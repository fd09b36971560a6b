"""What keeps one address or one user from taking the control plane's logins for itself.

``LoginGuard``: token buckets on ``/v1/login`` attempts per source address (an IPv6 /64
counts as one), per user (a tenant's user name) and per tenant (all sources together, sized
to what the tenant's login lane can serve, ``tenant_share``), so a brute force is refused
(429) before it costs a bcrypt check; and a bucket per source for the other unauthenticated
routes (``/v1/trust`` signs for anyone). A successful login gives its tokens back: the limits
are for failures, not for people who know their password. Buckets live in this proxy's
memory, so on a fleet each proxy limits on its own. ``unsigned`` refuses, before any lane, a
call to an authenticated route that carries no request signature (docs/decisions/0018).
"""

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jumpgate.protocol import routes
from jumpgate.protocol.audit import EventType, field_text
from jumpgate.protocol.names import tenant_from_host
from jumpgate.protocol.signing import HEADER_CERT, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIME

LOGIN_PATH = routes.LOGIN.path
"""The route the login limits apply to, exactly as the control plane matches it (a path
that differs in any byte is not the login route there either)."""
SIGNUP_PATH = routes.SIGNUP.path
"""Spending an invite sets a password: a bcrypt hash, so it runs in the login lane."""
BCRYPT_ROUTES = frozenset({("POST", LOGIN_PATH), ("POST", SIGNUP_PATH)})
"""The calls that run bcrypt (method, path): the login lane's."""
ANONYMOUS_PATHS = frozenset(
    {
        route.path
        for route in (
            routes.TRUST,
            routes.CA,
            routes.PING,
            routes.SIGNUP,
            routes.JOIN,
            routes.OPENAPI,
        )
    }
)
"""Unauthenticated routes (besides the login, limited on its own) held to a rate per source."""
OPEN_PATHS = ANONYMOUS_PATHS | {LOGIN_PATH}
"""Every route the control plane serves without a signed request (decision 0004); any other
path needs the signature headers (``unsigned``)."""
SIGNATURE_HEADERS = (HEADER_CERT, HEADER_TIME, HEADER_NONCE, HEADER_SIGNATURE)
"""What a signed request carries; the control plane refuses a call missing any of them."""
NOT_SIGNED = "not logged in: run jump login --proxy=<tenant address>"
"""The control plane's own words for an unsigned call, so the answer reads the same whichever
of the two gives it."""
AUDIT_EVERY = 60.0
"""Seconds between two audit events for one limited address or user: a flood leaves a few
events that count the refusals, not one per refusal."""
UNKNOWN_TENANT_AUDITS = 30
"""Audit events a proxy queues at once (then one a second) for refused logins to tenants it
never saw answer a login: anyone can name a new one in each request's ``Host``, and their
events would crowd real tenants' out of the outbox. The control plane stores none of a
tenant that does not exist."""
KNOWN_TENANTS = 10_000
"""Tenants a proxy remembers as existing (least recently seen forgotten first)."""


def source_key(address: str) -> str:
    """The key a source is limited by: an IPv4 address, or the /64 an IPv6 address is in
    (one host usually holds a whole /64, so per address it would be unlimited)."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def unsigned(path: str, headers: Mapping[str, str]) -> str | None:
    """Why a call to ``path`` with ``headers`` is refused before it reaches the control plane
    (401), or ``None``: a route outside ``OPEN_PATHS`` answers only signed calls, so one
    without the signature headers costs a tenant's lane nothing (an unknown path too: the
    control plane would answer it 404, which tells an anonymous caller nothing it needs).
    Whether the signature is good only the control plane can tell: it holds the CA."""
    if path in OPEN_PATHS:
        return None
    present = {name.lower() for name, value in headers.items() if value}
    if all(name in present for name in SIGNATURE_HEADERS):
        return None
    return NOT_SIGNED


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
    tenant: str = ""


Record = Callable[..., None]
"""Queues an audit event: ``record(event_type, tenant, outcome, **fields)`` (the proxy's
outbox to the control plane)."""


class LoginGuard:
    """Per-source, per-user and per-tenant limits on login attempts, with their audit
    events; and the per-source limit on the other unauthenticated routes."""

    def __init__(
        self,
        public_addr: str,
        *,
        per_source: TokenBuckets,
        per_user: TokenBuckets,
        per_tenant: TokenBuckets | None = None,
        anonymous: TokenBuckets | None = None,
        record: Record | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._public_addr = public_addr
        self.per_source = per_source
        self.per_user = per_user
        self.per_tenant = per_tenant or TokenBuckets(0, 1)  # none given: no tenant limit
        self.anonymous = anonymous or TokenBuckets(0, 1)  # none given: no limit
        self._record = record
        self._clock = clock
        self._audited: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()
        self._known: OrderedDict[str, None] = OrderedDict()  # tenants seen to exist
        self._unknown_audits = TokenBuckets(1.0, UNKNOWN_TENANT_AUDITS, capacity=1, clock=clock)

    def admit_anonymous(self, address: str) -> Refusal | None:
        """Whether an unauthenticated call (``ANONYMOUS_PATHS``) from ``address`` may
        proceed: each signs or looks up something for anyone, so each source has a rate."""
        source = source_key(address)
        wait = self.anonymous.take(source)
        if not wait:
            return None
        seconds = max(1, math.ceil(wait))
        return Refusal(seconds, f"too many requests from {source}: try again in {seconds} s")

    def admit(self, address: str, host: str, body: bytes) -> Admission | Refusal:
        """Whether a login attempt from ``address`` to ``host`` with ``body`` may proceed."""
        source = source_key(address)
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
        # All sources together: no more logins than the tenant's login lane can serve, so
        # a flood from many addresses is refused here instead of queueing (0018).
        wait = self.per_tenant.take(tenant) if tenant else 0.0
        if wait:
            self.per_source.give_back(source)
            if user_key:
                self.per_user.give_back(user_key)
            self._audit(tenant, "tenant", tenant, user, source)
            seconds = max(1, math.ceil(wait))
            return Refusal(
                seconds,
                f"too many login attempts for tenant {tenant!r}: try again in {seconds} s",
            )
        return Admission(source, user_key, tenant)

    def settle(self, admitted: Admission, status: int) -> None:
        """A login that succeeded does not count against its address or user. One answered
        as checked (success, or wrong credentials) shows that its tenant exists."""
        if admitted.tenant and (status < 400 or status in (401, 403)):
            self._known[admitted.tenant] = None
            self._known.move_to_end(admitted.tenant)
            while len(self._known) > KNOWN_TENANTS:
                self._known.popitem(last=False)
        if status < 400:
            self.per_source.give_back(admitted.source)
            if admitted.user_key:
                self.per_user.give_back(admitted.user_key)
            if admitted.tenant:
                self.per_tenant.give_back(admitted.tenant)

    def _audit(self, tenant: str, limit: str, key: str, user: str, source: str) -> None:
        """One event per limited address, user or tenant per ``AUDIT_EVERY``, counting
        refusals."""
        if self._record is None or not tenant:
            return
        now = self._clock()
        slot = (tenant, limit, key)
        last, refused = self._audited.get(slot, (-math.inf, 0))
        refused += 1
        if now - last < AUDIT_EVERY or (
            tenant not in self._known and self._unknown_audits.take("")
        ):
            self._audited[slot] = (last, refused)  # counted in the slot's next event
            self._audited.move_to_end(slot)
            while len(self._audited) > 10_000:
                self._audited.popitem(last=False)
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
            error="too many login attempts " + _LIMIT_WORDS[limit],
        )


_LIMIT_WORDS = {
    "source": "from this address",
    "user": "for this user",
    "tenant": "for this tenant",
}


def _user_of(body: bytes) -> str:
    """The ``user`` a login body names, or "" (the control plane answers a bad body): as
    text any store keeps, since it goes into the refusal's audit event.

    Deep nesting makes ``json.loads`` raise ``RecursionError``, which is not a ``ValueError``:
    it is bad JSON too, and the attempt still counts against its address."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    user = parsed.get("user") if isinstance(parsed, dict) else None
    return field_text(user, 128) if isinstance(user, str) else ""

"""What a proxy tells its nodes of their tenant's policy: the locks in force and the roles
revision (``PolicyUpdate``, pushed on each tunnel's control channel when it comes up and
whenever either changes), and the role definitions a node asks for (``RolesRequest``),
answered from a cache of one second per tenant, revision and names (docs/decisions/0034).

The proxy reads the policy once a second for every tenant at once (``lock_watch``); this
module holds the last reading and the control channels to push it to.
"""

import time
import weakref
from collections.abc import Callable
from typing import Protocol

from jumpgate.protocol import models
from jumpgate.protocol.resources import Lock, Role
from jumpgate.protocol.tunnel_messages import PolicyUpdate

ROLES_CACHE_SECONDS = 1.0
"""How long a tenant's role definitions are answered without asking the control plane."""
MAX_CACHED = 1024
"""Answers kept at once; the expired go first, then the oldest."""


class PolicyChannel(Protocol):
    """A tunnel's control channel, as the policy is pushed on it (``ControlSession``)."""

    def send_policy(self, update: PolicyUpdate) -> None: ...


class RoleSource(Protocol):
    """Where definitions come from (``control.ControlPlaneClient``)."""

    async def role_definitions(self, tenant: str, names: list[str]) -> list[Role]: ...


class NodePolicies:
    """Per tenant, the policy last read and the control channels it goes to."""

    def __init__(self, source: RoleSource, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._policies: dict[str, PolicyUpdate] = {}
        self._channels: dict[str, weakref.WeakSet[PolicyChannel]] = {}
        self._answers: dict[tuple[str, str, tuple[str, ...]], tuple[float, list[Role]]] = {}
        self.read = False  # a feed was read: every tenant's policy is known

    def __bool__(self) -> bool:
        """Whether any channel waits for policy (the watch polls only while one does)."""
        return any(self._channels.values())

    def join(self, tenant: str, channel: PolicyChannel) -> None:
        """Push ``tenant``'s policy on ``channel`` now (once known) and on each change."""
        self._channels.setdefault(tenant, weakref.WeakSet()).add(channel)
        if self.read:
            channel.send_policy(self.policy(tenant))

    def leave(self, tenant: str, channel: PolicyChannel) -> None:
        channels = self._channels.get(tenant)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._channels[tenant]

    def policy(self, tenant: str) -> PolicyUpdate:
        """The tenant's policy as last read (no locks, no revision: nothing written yet)."""
        return self._policies.get(tenant) or PolicyUpdate()

    def update(self, feed: models.LockFeed) -> list[str]:
        """Take a new reading; push it to the channels of each tenant whose policy changed
        (and, on the first reading, to every channel waiting). The tenants changed."""
        locks: dict[str, list[Lock]] = {}
        for held in feed.locks:
            locks.setdefault(held.tenant, []).append(held.lock)
        policies = {
            tenant: PolicyUpdate(
                locks=sorted(locks.get(tenant, []), key=lambda lock: lock.name),
                roles_revision=feed.role_revisions.get(tenant, ""),
            )
            for tenant in set(locks) | set(feed.role_revisions)
        }
        first = not self.read
        changed = [
            tenant
            for tenant in set(policies) | set(self._policies)
            if policies.get(tenant) != self._policies.get(tenant)
        ]
        self._policies, self.read = policies, True
        for tenant in list(self._channels) if first else changed:
            for channel in list(self._channels.get(tenant, ())):
                channel.send_policy(self.policy(tenant))
        return sorted(changed)

    async def definitions(self, tenant: str, names: list[str]) -> list[Role]:
        """The current definitions of ``names`` in ``tenant``, from the cache when the
        same question was answered in the last second under the same roles revision."""
        key = (tenant, self.policy(tenant).roles_revision, tuple(dict.fromkeys(names)))
        now = self._clock()
        cached = self._answers.get(key)
        if cached is not None and cached[0] > now:
            return list(cached[1])
        roles = await self._source.role_definitions(tenant, list(key[2]))
        if len(self._answers) >= MAX_CACHED:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
            while len(self._answers) >= MAX_CACHED:
                del self._answers[next(iter(self._answers))]
        self._answers[key] = (now + ROLES_CACHE_SECONDS, roles)
        return list(roles)

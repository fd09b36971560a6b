"""What the node knows of its tenant's policy: the locks in force and the roles' definitions.

The proxy pushes the locks and the tenant's roles revision on the tunnel's control channel
(``PolicyUpdate``) when the tunnel comes up and whenever either changes; the node asks for
the definitions of the roles a certificate names (``RolesRequest``) and keeps them until the
revision moves (docs/decisions/0034). Each connection the node serves watches the policy
(``Watcher``): a new lock that matches it ends it.

Until a proxy has pushed a policy the node has nothing to decide with and leaves the
decision to the proxy (``active`` is False: an agent behind a proxy of an earlier release
serves as it did); once one has, a role it cannot read refuses the connection (fail closed).
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jumpgate.node_agent.errors import ControlChannelError
from jumpgate.protocol.policy import Subject, lock_applies
from jumpgate.protocol.resources import Lock, Role
from jumpgate.protocol.tunnel_messages import PolicyUpdate

logger = logging.getLogger(__name__)

ROLES_SECONDS = 10.0
"""How long a new connection waits for its roles' definitions before it is refused."""

Fetch = Callable[[list[str]], Awaitable[list[Role]]]


class RolesUnavailable(Exception):
    """The roles' definitions could not be read; ``str()`` is the user's one line."""


class Watcher(Protocol):
    """A connection that must hear of new locks (``access_guard.ConnectionGuard``)."""

    def policy_changed(self) -> None: ...


@dataclass(frozen=True)
class NodeFacts:
    """What a role's ``node_labels`` and a lock's ``node`` are matched against."""

    host_id: str
    nodename: str
    labels: dict[str, str] = field(default_factory=dict)  # the agent's own: command labels move

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name in (self.host_id, self.nodename) if name)


class NodePolicy:
    """The tenant's locks and roles as this node last heard them."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.locks: list[Lock] = []
        self.revision: str | None = None  # None until a proxy pushed a policy
        self._roles: dict[str, Role] = {}
        self._generation = 0  # moves with the revision: a fetch begun before is not kept
        self._fetch: Fetch | None = None
        self._watchers: set[Watcher] = set()

    @property
    def active(self) -> bool:
        """Whether a proxy has pushed a policy: the node decides as well."""
        return self.revision is not None

    def connected(self, fetch: Fetch | None) -> None:
        """The tunnel's control channel to ask for roles on (None: the tunnel is down; the
        locks stay in force)."""
        self._fetch = fetch

    def update(self, update: PolicyUpdate) -> None:
        """Take a pushed policy; every connection hears of it."""
        if update.roles_revision != self.revision:
            self._roles.clear()
            self._generation += 1
        self.revision = update.roles_revision
        self.locks = list(update.locks)
        logger.info(
            "policy updated",
            extra={"locks": len(self.locks), "roles_revision": update.roles_revision},
        )
        for watcher in list(self._watchers):
            watcher.policy_changed()

    def lock_for(self, subject: Subject) -> Lock | None:
        """The first lock in force that stops ``subject``."""
        now = self.clock()
        for lock in self.locks:
            expires = lock.spec.expires
            if expires is not None and expires.timestamp() <= now:
                continue
            if lock_applies(lock.spec.target, subject):
                return lock
        return None

    async def roles(self, names: Sequence[str]) -> list[Role]:
        """The definitions of the roles ``names`` that exist, from the cache or the proxy;
        ``RolesUnavailable`` when they cannot be read."""
        missing = [name for name in dict.fromkeys(names) if name not in self._roles]
        if missing:
            if self._fetch is None:
                raise RolesUnavailable(
                    "the node cannot read your roles now (its tunnel is down): try again soon"
                )
            generation = self._generation
            try:
                fetched = await asyncio.wait_for(self._fetch(missing), ROLES_SECONDS)
            except (TimeoutError, ControlChannelError) as exc:
                logger.warning("roles not read", extra={"reason": str(exc) or type(exc).__name__})
                raise RolesUnavailable(
                    "the node could not read your roles from the platform: try again soon"
                ) from exc
            if generation != self._generation:
                return [role for role in fetched if role.name in names]  # used once, not kept
            self._roles.update((role.name, role) for role in fetched)
        return [self._roles[name] for name in names if name in self._roles]

    def watch(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def watching(self) -> Collection[Watcher]:
        return tuple(self._watchers)

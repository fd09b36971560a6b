"""A user connection's standing on the node, decided again for as long as it lives.

An OpenSSH ControlMaster connection opens new sessions and forwards for hours over one
authentication; the node therefore decides at authentication and again on every new
channel, and ends the connection itself when the policy turns against it
(docs/decisions/0034):

- at authentication, the certificate's roles (their definitions as the proxy last said
  them) must allow the login on this node's labels (``AccessChecker.login_access``);
- on every new channel, and whenever the proxy pushes a policy, no lock in force may match
  the user, their roles, this node or the login (a removed user's lock names its id), and
  the certificate must not have expired;
- the roles' options end a connection idle for ``client_idle_timeout`` (no input from the
  user), and one whose certificate expires when ``disconnect_expired_cert`` says so.

The guard only decides; ending the connection (a line on each session's stderr, then an
SSH disconnect carrying it) is the server's (``Ending``).
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from jumpgate.node_agent.policy_cache import NodeFacts, NodePolicy, RolesUnavailable
from jumpgate.protocol.policy import AccessChecker, Subject, lock_message
from jumpgate.protocol.resources import TRAIT_LOGINS, TraitMap
from jumpgate.protocol.ssh_identity import CertIdentity

logger = logging.getLogger(__name__)

EXPIRED = "your certificate has expired: log in again (jump login)"
IDLE = "idle timeout"

Ending = Callable[[str], None]
"""Ends the connection with the user's one line."""


class ConnectionGuard:
    """One connection's checks; ``admit`` once, ``refusal`` on every channel, ``close`` at
    its end."""

    def __init__(
        self,
        identity: CertIdentity | None,
        login: str,
        *,
        policy: NodePolicy | None,
        node: NodeFacts | None,
        end: Ending,
        has_traits: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.login = login
        self.policy = policy
        self.node = node
        self._end = end
        self._has_traits = has_traits  # a certificate of before 0034 names none
        self._clock = clock
        self.subject = Subject(
            user=identity.user if identity else "",
            user_id=identity.user_id if identity else "",
            roles=identity.roles if identity else (),
            node_names=node.names if node else (),
            login=login,
        )
        self.checker: AccessChecker | None = None  # once admitted under a pushed policy
        self._revision: str | None = None  # the roles revision it was admitted under
        self._traits: TraitMap = {}
        self.ended: str | None = None  # the line the connection was ended with
        self._last_input = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()  # admission decided (channels may come before)
        self._options_moved = asyncio.Event()  # set (and replaced) when the checker changes
        self._closed = False  # the connection is gone: nothing more is started

    @property
    def pending(self) -> bool:
        """Whether admission is still being decided (the roles being read)."""
        return not self._settled.is_set()

    def settle(self) -> None:
        """Admission is decided (``ended`` says if it refused)."""
        self._settled.set()

    async def settled(self) -> str | None:
        """Once admission is decided: None to go on, else the user's one line. A client
        opens its first channel as soon as it is authenticated, while the roles may still
        be read from the proxy."""
        await self._settled.wait()
        return self.refusal()

    async def admit(self) -> str | None:
        """At authentication: None to go on, else the user's one line."""
        refused = self.refusal()
        if refused is not None:
            return refused
        policy, node, identity = self.policy, self.node, self.identity
        if policy is None or node is None:
            return None
        policy.watch(self)  # from now: a lock pushed while the roles are read counts too
        if not policy.active or identity is None:
            return None  # the proxy decided alone (an earlier release, or no policy yet)
        try:
            roles = await policy.roles(identity.roles)
        except RolesUnavailable as exc:
            return str(exc)
        # A certificate without traits was issued for exactly its principals: the login
        # passed asyncssh's check against them.
        self._revision = policy.revision
        traits = identity.trait_map() if self._has_traits else {TRAIT_LOGINS: [self.login]}
        self._traits = traits
        self.checker = AccessChecker(roles, traits)
        decision = self.checker.login_access(node.nodename, node.labels, self.login)
        if not decision:
            return decision.reason
        return self.refusal()  # a lock may have come while the roles were read

    async def _recheck(self) -> None:
        """The roles moved on: an open connection (a ControlMaster's) ends once they no
        longer allow its login here; one that cannot read them now keeps its decision."""
        policy, node, identity = self.policy, self.node, self.identity
        if policy is None or node is None or identity is None:
            return
        try:
            roles = await policy.roles(identity.roles)
        except RolesUnavailable:
            return
        if self.ended is not None:
            return
        self.checker = AccessChecker(roles, self._traits)
        moved, self._options_moved = self._options_moved, asyncio.Event()
        moved.set()  # the timers read the new options
        decision = self.checker.login_access(node.nodename, node.labels, self.login)
        if not decision:
            self.end(decision.reason)

    def start(self) -> None:
        """Start the roles' timers, once admitted; they follow the options of the roles as
        they are now (a role changed while the connection is open applies to it)."""
        if self.checker is None:
            return
        self._spawn(self._idle())
        identity = self.identity
        if identity and identity.valid_before is not None:
            self._spawn(self._expiry(identity.valid_before))

    def refusal(self) -> str | None:
        """On every new channel: None to open it, else the user's one line."""
        if self.ended is not None:
            return self.ended
        identity = self.identity
        if (
            identity
            and identity.valid_before is not None
            and identity.valid_before <= self._clock()
        ):
            return EXPIRED
        if self.policy is not None:
            lock = self.policy.lock_for(self.subject)
            if lock is not None:
                return lock_message(lock)
        return None

    def touch(self) -> None:
        """The user sent something: the connection is not idle."""
        self._last_input = time.monotonic()

    def policy_changed(self) -> None:
        """The proxy pushed a policy: a lock that now matches ends the connection."""
        if self.policy is None or self.ended is not None:
            return
        lock = self.policy.lock_for(self.subject)
        if lock is not None:
            self.end(lock_message(lock))
        elif self.checker is not None and self.policy.revision != self._revision:
            self._revision = self.policy.revision
            self._spawn(self._recheck())

    def end(self, message: str) -> None:
        """End the connection once, with ``message``."""
        if self.ended is not None:
            return
        self.ended = message
        logger.info(
            "connection ended by the node's policy",
            extra={"user": self.subject.user, "login": self.login, "reason": message},
        )
        self._end(message)

    def close(self) -> None:
        """The connection is gone: stop watching and timing it (also when it went while
        its roles were read, before the timers would start)."""
        self._closed = True
        if self.policy is not None:
            self.policy.unwatch(self)
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _until_options_move(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None: for ever), or less if the roles' options change."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._options_moved.wait(), seconds)

    async def _idle(self) -> None:
        while self.ended is None:
            idle = self.checker.client_idle_timeout if self.checker else None
            if idle is None:
                await self._until_options_move(None)
                continue
            left = self._last_input + idle.total_seconds() - time.monotonic()
            if left <= 0:
                self.end(IDLE)
                return
            await self._until_options_move(left)

    async def _expiry(self, valid_before: int) -> None:
        while self.ended is None:
            left = valid_before - self._clock()
            if left <= 0 and self.checker is not None and self.checker.disconnect_expired_cert:
                self.end(EXPIRED)
                return
            await self._until_options_move(min(left, 60.0) if left > 0 else None)

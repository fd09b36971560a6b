"""The proxy's watch over locks: once a second, every lock in force on the platform, and the
live sessions this proxy carries that a lock now matches are ended. A reading names the
revision it holds: the control plane answers only what changed since (docs/decisions/0035).

This is the proxy's backstop: the node ends a locked connection first, telling the user the
lock's message on each open session's stderr (it was pushed the locks, ``node_policy``). The
proxy gives it ``NODE_GRACE_SECONDS`` to do so, then closes the session's pipe itself (a node
running an older agent, or a wedged one). Either way the session's ``session.end`` gives
``reason: "locked: <the lock's message>"``: the end of a session is one event, whoever ended
it, so its reason is on it rather than on a separate warning (docs/decisions/0034).

The same reading refreshes the policy pushed to the nodes. Nothing is read while this proxy
holds no session and no control channel. A failed reading is logged and the next one tried
a second later: the watch never ends on an error.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from jumpgate.edge_proxy.broker import LiveSession
from jumpgate.edge_proxy.collaborators import Pipe
from jumpgate.edge_proxy.control import ControlPlaneError
from jumpgate.edge_proxy.node_policy import NodePolicies
from jumpgate.protocol import models
from jumpgate.protocol.policy import Subject, lock_applies, lock_message
from jumpgate.protocol.resources import Lock

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often every lock in force is read: a lock ends a live session within 5 s."""
NODE_GRACE_SECONDS = 2.0
"""How long the node has to end a locked session with the lock's message before the proxy
closes its pipe."""
FEED_TIMEOUT_SECONDS = 3.0
"""A reading that takes longer is abandoned, and the next one tried."""

P = TypeVar("P", bound=Pipe)


class FeedSource(Protocol):
    """Where the locks are read (``control.ControlPlaneClient``): ``None`` when the revision
    named is still current."""

    async def lock_feed(self, revision: str = "") -> models.LockFeed | None: ...


class Sessions(Protocol[P]):
    """The live sessions (``broker.SessionBroker``)."""

    @property
    def live(self) -> list[P]: ...
    def sessions(self) -> list[LiveSession[P]]: ...
    def end_reason(self, pipe: P, reason: str) -> None: ...


def subject_of(session: LiveSession[Any]) -> Subject:
    """Whom a lock is checked against for a live session. Its login is the one the proxy
    knows only when it is the node's too (see ``broker.Caller``); a login lock ends an
    ``ssh -J`` session at the node, which knows its login."""
    caller = session.caller
    return Subject(
        user=caller.user,
        user_id=caller.user_id,
        roles=caller.roles,
        node_names=(session.server_id, session.nodename),
        login=caller.login if caller.login_is_nodes else "",
    )


class LockWatch(Generic[P]):
    """Reads the locks each second and ends the live sessions they match."""

    def __init__(
        self,
        source: FeedSource,
        sessions: Sessions[P],
        policies: NodePolicies,
        spawn: Callable[[Coroutine[Any, Any, object], str], None],
        *,
        poll: float = POLL_SECONDS,
        node_grace: float = NODE_GRACE_SECONDS,
    ) -> None:
        self._source = source
        self._sessions = sessions
        self._policies = policies
        self._spawn = spawn
        self.poll = poll
        self.node_grace = node_grace
        self._ending: set[P] = set()  # told their reason, waiting for the node to end them
        self._held: models.LockFeed | None = None  # the last reading, kept while current
        self._pushed: models.LockFeed | None = None  # the reading the nodes were told

    async def run(self) -> None:
        """Read and apply the locks every ``poll`` seconds, for ever."""
        while True:
            await asyncio.sleep(self.poll)
            if not self._sessions.live and not self._policies:
                continue
            held = self._held
            try:
                feed = await asyncio.wait_for(
                    self._source.lock_feed(held.revision if held else ""), FEED_TIMEOUT_SECONDS
                )
            except (ControlPlaneError, TimeoutError) as exc:
                logger.warning("locks not read", extra={"reason": str(exc) or "timed out"})
                continue
            except Exception:  # an odd answer must not end the watch: locks would stop here
                logger.exception("locks not read")
                continue
            self._held = feed or held
            if self._held is not None:
                self.apply(self._held)  # each second: a session opened since may match

    def apply(self, feed: models.LockFeed) -> list[P]:
        """Push the reading to the nodes and end the sessions a lock matches; those newly
        ended."""
        if feed is not self._pushed:  # the same reading again: the nodes have it
            self._policies.update(feed)
            self._pushed = feed
        locks: dict[str, list[Lock]] = {}
        now = datetime.now(UTC)
        for held in feed.locks:
            expires = held.lock.spec.expires
            if expires is None or expires > now:  # a lock that expired moves no revision
                locks.setdefault(held.tenant, []).append(held.lock)
        ended = []
        for session in self._sessions.sessions():
            if session.pipe in self._ending or session.tenant not in locks:
                continue
            subject = subject_of(session)
            lock = next(
                (k for k in locks[session.tenant] if lock_applies(k.spec.target, subject)), None
            )
            if lock is not None:
                self._end(session, lock_message(lock))
                ended.append(session.pipe)
        return ended

    def _end(self, session: LiveSession[P], message: str) -> None:
        logger.info(
            "session ended by a lock",
            extra={"tenant": session.tenant, "node": session.server_id, "reason": message},
        )
        self._sessions.end_reason(session.pipe, f"locked: {message}")
        self._ending.add(session.pipe)
        self._spawn(self._close_later(session.pipe, message), "lock-end")

    async def _close_later(self, pipe: P, message: str) -> None:
        """Close the session unless its node did within the grace; a side still opening
        cannot be closed yet: asked again each 0.1 s, for at most a second."""
        try:
            await asyncio.sleep(self.node_grace)
            if pipe in self._sessions.live:
                pipe.tell(message)
            for _ in range(10):
                if pipe not in self._sessions.live or pipe.close():
                    return
                await asyncio.sleep(0.1)
            logger.warning("a locked session could not be closed yet")
        finally:
            self._ending.discard(pipe)

"""The proxy's lock watch and node policy on fakes: the real broker over the fakes of
``test_broker``, a feed the test writes, and control channels that keep what they are sent.

A lock ends the live sessions it matches (the node first: the proxy closes the pipe after
the node's grace), with ``locked: <message>`` on the session's end; the reading is pushed to
the tenant's nodes only when it changed; role definitions are cached a second per revision.
"""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jumpgate.edge_proxy.broker import Caller
from jumpgate.edge_proxy.control import ControlPlaneError
from jumpgate.edge_proxy.lock_watch import LockWatch
from jumpgate.edge_proxy.node_policy import ROLES_CACHE_SECONDS, NodePolicies
from jumpgate.protocol import models
from jumpgate.protocol.resources import Lock, LockSpec, LockTarget, Metadata, Role
from jumpgate.protocol.tunnel_messages import PolicyUpdate
from tests.unit.test_broker import ALICE, DB, WEB, FakePipe, World, world

BOB = Caller("acme", "bob", "u-bob", "ubuntu", "192.0.2.8:50000", roles=("dev",))


def lock(target: LockTarget, name: str = "l1", message: str = "incident 42") -> Lock:
    return Lock(metadata=Metadata(name=name), spec=LockSpec(target=target, message=message))


def feed(
    *locks: tuple[str, Lock], revisions: dict[str, str] | None = None, revision: str = "r1"
) -> models.LockFeed:
    return models.LockFeed(
        locks=[models.TenantLock(tenant=t, lock=k) for t, k in locks],
        role_revisions=revisions or {},
        revision=revision,
    )


async def _until(done: Callable[[], bool], seconds: float = 2.0) -> None:
    """Wait until ``done()``, at most ``seconds``."""
    for _ in range(int(seconds / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)


@dataclass
class FakeRoles:
    """The control plane's role definitions, counting the questions."""

    roles: dict[str, list[Role]] = field(default_factory=dict)  # per tenant
    asked: list[tuple[str, list[str]]] = field(default_factory=list)
    down: bool = False

    async def role_definitions(self, tenant: str, names: list[str]) -> list[Role]:
        self.asked.append((tenant, names))
        if self.down:
            raise ControlPlaneError(503, "jumpgate-internal failed")
        return [r for r in self.roles.get(tenant, []) if r.name in names]


@dataclass
class FakeFeed:
    """Readings handed out in turn; an exception in the list is raised instead."""

    readings: list[models.LockFeed | Exception | None]
    read: int = 0
    held: list[str] = field(default_factory=list)  # the revision named by each reading

    async def lock_feed(self, revision: str = "") -> models.LockFeed | None:
        reading = self.readings[min(self.read, len(self.readings) - 1)]
        self.read += 1
        self.held.append(revision)
        if isinstance(reading, Exception):
            raise reading
        return reading


@dataclass(eq=False)
class Channel:
    """A tunnel's control channel: what was pushed on it."""

    sent: list[PolicyUpdate] = field(default_factory=list)

    def send_policy(self, update: PolicyUpdate) -> None:
        self.sent.append(update)


class Watched:
    """A broker with live sessions, and its lock watch with a short node grace."""

    def __init__(self, readings: list[models.LockFeed | Exception | None] | None = None) -> None:
        self.w: World = world()
        self.policies = NodePolicies(FakeRoles())
        self.feed = FakeFeed(readings or [feed()])
        self.tasks: list[asyncio.Task[Any]] = []
        self.watch = LockWatch(
            self.feed, self.w.broker, self.policies, self._spawn, poll=0.01, node_grace=0.05
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, object], name: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coroutine, name=name))

    async def start(self, name: str, caller: Caller = ALICE) -> FakePipe:
        pipe = FakePipe(self.w.broker)
        await self.w.broker.open(caller, name, pipe)
        return pipe

    async def settle(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), 2)

    def ends(self) -> list[dict[str, Any]]:
        return [f for kind, _, _, _, f in self.w.audit.events if kind == "session.end"]


MESSAGE = "{} is locked (incident 42): ask a tenant admin"
ENDS = [
    (LockTarget(user="alice"), ALICE, MESSAGE.format("user 'alice'")),
    (LockTarget(user="alice", user_id="u-alice"), ALICE, MESSAGE.format("user 'alice'")),
    (LockTarget(role="dev"), BOB, MESSAGE.format("role 'dev'")),
    (LockTarget(node="web-1"), ALICE, MESSAGE.format("node 'web-1'")),
    (LockTarget(node=WEB), BOB, MESSAGE.format(f"node '{WEB}'")),
    (LockTarget(login="root"), replace(ALICE, login_is_nodes=True), MESSAGE.format("login 'root'")),
    (LockTarget(login="root"), ALICE, None),  # ssh -J: the login is the node's to check
    (LockTarget(user="alice", user_id="u-earlier"), ALICE, None),
    (LockTarget(role="dev"), ALICE, None),
    (LockTarget(node="db"), ALICE, None),
]


@pytest.mark.parametrize(
    ("target", "caller", "message"),
    ENDS,
    ids=[
        "user",
        "user-by-id",
        "role",
        "node-by-name",
        "node-by-uuid",
        "login-known",
        "login-unknown-left-to-node",
        "another-user-of-that-name",
        "a-role-not-held",
        "another-node",
    ],
)
def test_a_lock_ends_the_live_sessions_it_matches(
    target: LockTarget, caller: Caller, message: str | None
) -> None:
    async def run() -> None:
        t = Watched()
        pipe = await t.start("web-1", caller)
        other_tenant = await t.start("payroll", replace(caller, tenant="globex"))
        ended = t.watch.apply(feed(("acme", lock(target))))
        assert ended == ([pipe] if message else [])
        await t.settle()
        assert pipe.ended is (message is not None)
        assert other_tenant.ended is False
        if message is not None:
            [end] = t.ends()
            assert end["reason"] == f"locked: {message}"
            assert pipe.told == [message]  # the node did not say it: the proxy does

    asyncio.run(run())


def test_another_tenants_lock_never_ends_a_session() -> None:
    async def run() -> None:
        t = Watched()
        pipe = await t.start("web-1")
        t.watch.apply(feed(("globex", lock(LockTarget(user="alice")))))
        await t.settle()
        assert pipe.ended is False

    asyncio.run(run())


def test_the_node_ends_it_first_and_the_end_is_recorded_once() -> None:
    async def run() -> None:
        t = Watched()
        pipe = await t.start("web-1")
        t.watch.apply(feed(("acme", lock(LockTarget(user="alice")))))
        pipe.end(to_node=5, to_user=7)  # the node closed it, with the message, at once
        assert t.watch.apply(feed(("acme", lock(LockTarget(user="alice"))))) == []
        await t.settle()
        [end] = t.ends()
        assert end["reason"].startswith("locked: user 'alice' is locked")
        assert (end["bytes_to_node"], end["bytes_to_user"]) == (5, 7)
        assert pipe.told == []  # the node said it

    asyncio.run(run())


def test_a_session_told_once_is_not_told_again_while_the_node_ends_it() -> None:
    async def run() -> None:
        t = Watched()
        pipe = await t.start("web-1")
        reading = feed(("acme", lock(LockTarget(user="alice"))))
        assert t.watch.apply(reading) == [pipe]
        assert t.watch.apply(reading) == []
        await t.settle()
        assert len(t.tasks) == 1

    asyncio.run(run())


def test_the_watch_reads_every_poll_and_outlives_a_failed_reading() -> None:
    async def run() -> None:
        t = Watched(
            [
                ControlPlaneError(503, "down"),
                ValueError("an odd answer"),
                feed(("acme", lock(LockTarget(user="alice")))),
            ]
        )
        pipe = await t.start("web-1")
        runner = asyncio.get_running_loop().create_task(t.watch.run())
        try:
            await _until(lambda: pipe.ended)
        finally:
            runner.cancel()
        assert pipe.ended is True
        assert t.feed.read >= 3

    asyncio.run(run())


def test_a_reading_unchanged_keeps_the_locks_held_for_sessions_opened_since() -> None:
    """The watch names the revision it holds; "unchanged" (None) costs nothing and the
    locks it holds still end a session opened after they were read (a session-auth that
    passed just before the lock was written)."""

    async def run() -> None:
        t = Watched([feed(("acme", lock(LockTarget(user="alice"))), revision="r7"), None])
        channel = Channel()
        t.policies.join("acme", channel)  # so that it polls before any session
        runner = asyncio.get_running_loop().create_task(t.watch.run())
        try:
            await _until(lambda: t.feed.read >= 3)
            pipe = await t.start("web-1")
            await _until(lambda: pipe.ended)
        finally:
            runner.cancel()
        assert pipe.ended is True
        assert t.feed.held[:3] == ["", "r7", "r7"]
        assert len(channel.sent) == 1  # pushed once: the same reading is not pushed again

    asyncio.run(run())


def test_a_held_lock_that_expired_ends_nothing() -> None:
    """An expiry moves no revision: the proxy drops an expired lock it holds itself."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(user="alice"), message="m", expires=past),
    )

    async def run() -> None:
        t = Watched()
        pipe = await t.start("web-1")
        assert t.watch.apply(feed(("acme", expired))) == []
        assert pipe.ended is False

    asyncio.run(run())


def test_nothing_is_read_while_nothing_is_held() -> None:
    async def run() -> None:
        t = Watched()
        runner = asyncio.get_running_loop().create_task(t.watch.run())
        await asyncio.sleep(0.1)
        runner.cancel()
        assert t.feed.read == 0
        channel = Channel()
        t.policies.join("acme", channel)  # a control channel: its node waits for policy
        runner = asyncio.get_running_loop().create_task(t.watch.run())
        await asyncio.sleep(0.1)
        runner.cancel()
        assert t.feed.read > 0
        assert channel.sent == [PolicyUpdate()]

    asyncio.run(run())


def test_policy_is_pushed_once_read_and_then_only_when_it_changes() -> None:
    policies = NodePolicies(FakeRoles())
    acme, acme2, globex = Channel(), Channel(), Channel()
    policies.join("acme", acme)
    policies.join("globex", globex)
    assert acme.sent == []  # nothing read yet
    user_lock = lock(LockTarget(user="alice"))
    assert policies.update(feed(("acme", user_lock), revisions={"acme": "r1"})) == ["acme"]
    assert acme.sent == [PolicyUpdate(locks=[user_lock], roles_revision="r1")]
    assert globex.sent == [PolicyUpdate()]  # the first reading goes to every channel
    policies.join("acme", acme2)  # a tunnel coming up later gets it at once
    assert acme2.sent == acme.sent
    assert policies.update(feed(("acme", user_lock), revisions={"acme": "r1"})) == []
    assert len(acme.sent) == 1
    assert policies.update(feed(revisions={"acme": "r2"})) == ["acme"]
    assert acme.sent[-1] == PolicyUpdate(locks=[], roles_revision="r2")
    assert globex.sent == [PolicyUpdate()]  # another tenant's change is not pushed to it
    policies.leave("acme", acme)
    policies.update(feed(revisions={"acme": "r3"}))
    assert len(acme.sent) == 2
    assert acme2.sent[-1].roles_revision == "r3"


def test_role_definitions_are_cached_a_second_per_revision() -> None:
    now = [100.0]
    source = FakeRoles(roles={"acme": [Role(metadata=Metadata(name="dev"))]})
    policies = NodePolicies(source, clock=lambda: now[0])

    async def ask(tenant: str = "acme") -> list[str]:
        return [r.name for r in await policies.definitions(tenant, ["dev", "gone"])]

    assert asyncio.run(ask()) == ["dev"]
    assert asyncio.run(ask()) == ["dev"]
    assert len(source.asked) == 1
    assert asyncio.run(ask("globex")) == []  # another tenant: its own question
    assert len(source.asked) == 2
    policies.update(feed(revisions={"acme": "r2"}))  # a role changed: asked again
    assert asyncio.run(ask()) == ["dev"]
    assert len(source.asked) == 3
    now[0] += ROLES_CACHE_SECONDS + 0.01
    asyncio.run(ask())
    assert len(source.asked) == 4


def test_role_definitions_not_read_are_an_error_not_an_empty_answer() -> None:
    policies = NodePolicies(FakeRoles(down=True))
    with pytest.raises(ControlPlaneError):
        asyncio.run(policies.definitions("acme", ["dev"]))


def test_sessions_to_other_nodes_and_users_run_on() -> None:
    async def run() -> None:
        t = Watched()
        web = await t.start("web-1")
        db = await t.start("db")
        bobs = await t.start("web-1", BOB)
        t.watch.apply(feed(("acme", lock(LockTarget(node=DB)))))
        await t.settle()
        assert (web.ended, db.ended, bobs.ended) == (False, True, False)

    asyncio.run(run())


class Opening(FakePipe):
    """A pipe whose node side is still opening for its first two closes."""

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        self.refusals = 2

    def close(self) -> bool:
        if self.refusals:
            self.refusals -= 1
            return False
        return super().close()


def test_a_session_still_opening_is_closed_once_it_can_be() -> None:
    async def run() -> None:
        t = Watched()
        pipe = Opening(t.w.broker)
        await t.w.broker.open(ALICE, "web-1", pipe)
        t.watch.apply(feed(("acme", lock(LockTarget(user="alice")))))
        await t.settle()
        assert (pipe.ended, pipe.refusals) == (True, 0)

    asyncio.run(run())

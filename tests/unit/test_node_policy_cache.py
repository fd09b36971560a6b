"""The node's policy cache and a connection's guard, without SSH: roles read once per
revision, locks in force until they expire, and what each check answers (decision 0034)."""

import asyncio
import time
from datetime import UTC, datetime

import pytest

from jumpgate.node_agent.access_guard import EXPIRED, ConnectionGuard
from jumpgate.node_agent.errors import ControlChannelError
from jumpgate.node_agent.policy_cache import NodeFacts, NodePolicy, RolesUnavailable
from jumpgate.protocol.resources import (
    Conditions,
    Lock,
    LockSpec,
    LockTarget,
    Metadata,
    Role,
    RoleSpec,
)
from jumpgate.protocol.ssh_identity import CertIdentity
from jumpgate.protocol.tunnel_messages import PolicyUpdate

NOW = 1_800_000_000.0
NODE = NodeFacts("6f1c-uuid", "web-1", {"env": "prod"})


def _role(name: str, env: str = "*") -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(allow=Conditions(logins=["{{internal.logins}}"], node_labels={"env": env})),
    )


def _lock(expires: datetime | None = None, **target: str) -> Lock:
    return Lock(
        metadata=Metadata(name="l1"),
        spec=LockSpec(target=LockTarget(**target), message="why", expires=expires),
    )


class Proxy:
    """The proxy's answers to ``RolesRequest``, counted."""

    def __init__(self, *roles: Role) -> None:
        self.roles = {role.name: role for role in roles}
        self.asked: list[list[str]] = []
        self.fail: Exception | None = None

    async def fetch(self, names: list[str]) -> list[Role]:
        self.asked.append(names)
        if self.fail is not None:
            raise self.fail
        return [self.roles[n] for n in names if n in self.roles]


def test_roles_are_read_once_per_revision() -> None:
    proxy = Proxy(_role("dev"), _role("ops"))
    policy = NodePolicy(clock=lambda: NOW)
    policy.connected(proxy.fetch)
    policy.update(PolicyUpdate(roles_revision="r1"))

    async def body() -> None:
        assert [r.name for r in await policy.roles(["dev", "nosuch"])] == ["dev"]
        assert [r.name for r in await policy.roles(["dev", "ops"])] == ["dev", "ops"]
        policy.update(PolicyUpdate(roles_revision="r1"))  # the same: kept
        await policy.roles(["dev"])
        policy.update(PolicyUpdate(roles_revision="r2"))  # moved: read again
        await policy.roles(["dev"])

    asyncio.run(body())
    assert proxy.asked == [["dev", "nosuch"], ["ops"], ["dev"]]


@pytest.mark.parametrize(
    "failure",
    [ControlChannelError("the control channel closed"), None],
    ids=["channel-closed", "tunnel-down"],
)
def test_roles_that_cannot_be_read_refuse_in_one_line(failure: Exception | None) -> None:
    proxy = Proxy(_role("dev"))
    proxy.fail = failure
    policy = NodePolicy()
    policy.connected(proxy.fetch if failure is not None else None)
    policy.update(PolicyUpdate())
    with pytest.raises(RolesUnavailable, match="try again soon"):
        asyncio.run(policy.roles(["dev"]))


LOCKS = [
    (_lock(user="alice"), True),
    (_lock(expires=datetime.fromtimestamp(NOW - 1, UTC), user="alice"), False),
    (_lock(expires=datetime.fromtimestamp(NOW + 60, UTC), user="alice"), True),
    (_lock(user_id="u-other"), False),
    (_lock(node="6f1c-uuid"), True),
    (_lock(role="dev", login="root"), True),
    (_lock(role="dev", login="ubuntu"), False),
]


@pytest.mark.parametrize(
    ("lock", "stops"),
    LOCKS,
    ids=["user", "expired", "not-yet-expired", "other-user-id", "node-uuid", "role-and-login",
         "role-other-login"],
)  # fmt: skip
def test_a_lock_stops_a_connection_it_matches_until_it_expires(lock: Lock, stops: bool) -> None:
    policy = NodePolicy(clock=lambda: NOW)
    policy.update(PolicyUpdate(locks=[lock]))
    ended: list[str] = []
    guard = ConnectionGuard(
        CertIdentity("alice", "u-alice", roles=("dev",)),
        "root",
        policy=policy,
        node=NODE,
        end=ended.append,
        clock=lambda: NOW,
    )
    assert (guard.refusal() is not None) is stops
    policy.watch(guard)
    policy.update(PolicyUpdate(locks=[lock]))  # pushed again: a live connection ends
    assert len(ended) == (1 if stops else 0)
    policy.update(PolicyUpdate(locks=[lock]))
    assert len(ended) == (1 if stops else 0)  # once


@pytest.mark.parametrize(
    ("valid_before", "refused"),
    [(None, False), (int(NOW) + 1, False), (int(NOW), True), (0, True)],
    ids=["before-0034", "valid", "just-expired", "malformed"],
)
def test_an_expired_certificate_opens_nothing_new(valid_before: int | None, refused: bool) -> None:
    guard = ConnectionGuard(
        CertIdentity("alice", "u-alice", valid_before=valid_before),
        "root",
        policy=None,
        node=None,
        end=lambda _: None,
        clock=lambda: NOW,
    )
    assert guard.refusal() == (EXPIRED if refused else None)


@pytest.mark.parametrize(
    ("env", "has_traits", "allowed"),
    [("prod", True, True), ("staging", True, False), ("prod", False, True)],
    ids=["labels-match", "labels-differ", "certificate-before-traits"],
)
def test_admission_checks_the_login_on_the_nodes_labels(
    env: str, has_traits: bool, allowed: bool
) -> None:
    policy = NodePolicy()
    policy.connected(Proxy(_role("dev", env)).fetch)
    policy.update(PolicyUpdate())
    traits = {"logins": ("root",)} if has_traits else {}
    guard = ConnectionGuard(
        CertIdentity("alice", "u-alice", roles=("dev",), traits=traits),
        "root",
        policy=policy,
        node=NODE,
        end=lambda _: None,
        has_traits=has_traits,
    )
    refused = asyncio.run(guard.admit())
    if allowed:
        assert refused is None
    else:
        assert refused == "your roles do not allow login 'root' on node 'web-1': see jump ls"


def test_a_node_that_was_pushed_no_policy_leaves_roles_to_the_proxy() -> None:
    proxy = Proxy()
    policy = NodePolicy()
    policy.connected(proxy.fetch)
    guard = ConnectionGuard(
        CertIdentity("alice", "u-alice", roles=("dev",)),
        "root",
        policy=policy,
        node=NODE,
        end=lambda _: None,
    )
    assert asyncio.run(guard.admit()) is None
    assert proxy.asked == []


def _with_options(role: Role, **options: object) -> Role:
    spec = role.spec.model_copy(update={"options": role.spec.options.model_copy(update=options)})
    return role.model_copy(update={"spec": spec})


@pytest.mark.parametrize(
    ("options", "expires_in", "said"),
    [
        ({"client_idle_timeout": "1s"}, None, "idle timeout"),
        ({"disconnect_expired_cert": True}, 1, EXPIRED),
    ],
    ids=["idle-timeout-set", "disconnect-expired-cert-set-after-expiry"],
)
def test_an_open_connection_follows_the_roles_options_when_they_change(
    options: dict[str, object], expires_in: int | None, said: str
) -> None:
    """A role changed to time out idle connections, or to end those of expired certificates,
    applies to a connection already open (a ControlMaster's), as its login does: the timers
    were set once, at admission, from the options then."""
    proxy = Proxy(_role("dev"))
    policy = NodePolicy()
    policy.connected(proxy.fetch)
    policy.update(PolicyUpdate(roles_revision="1"))
    ended: list[str] = []
    identity = CertIdentity(
        "alice",
        "u-alice",
        roles=("dev",),
        traits={"logins": ("root",)},
        valid_before=int(time.time()) + expires_in if expires_in is not None else None,
    )
    guard = ConnectionGuard(identity, "root", policy=policy, node=NODE, end=ended.append)

    async def run() -> float:
        assert await guard.admit() is None
        guard.start()
        await asyncio.sleep(0.3 if expires_in is None else expires_in + 0.5)
        assert ended == []  # nothing in the roles ends it yet
        proxy.roles["dev"] = _with_options(_role("dev"), **options)
        began = time.monotonic()
        policy.update(PolicyUpdate(roles_revision="2"))
        while not ended and time.monotonic() - began < 5:
            await asyncio.sleep(0.05)
        guard.close()
        return time.monotonic() - began

    took = asyncio.run(run())
    assert ended == [said]
    assert took < 3


def test_a_connection_gone_while_its_roles_were_read_leaves_no_timer() -> None:
    """The client may leave while the roles are read: the connection is closed before the
    guard's timers would start, and a timer started after ``close`` was never cancelled
    (one waiting for ever per such connection)."""
    proxy = Proxy(_role("dev"))
    policy = NodePolicy()
    policy.connected(proxy.fetch)
    policy.update(PolicyUpdate(roles_revision="1"))
    identity = CertIdentity(
        "alice",
        "u-alice",
        roles=("dev",),
        traits={"logins": ("root",)},
        valid_before=int(time.time()) + 3600,
    )

    async def run() -> int:
        guard = ConnectionGuard(identity, "root", policy=policy, node=NODE, end=lambda _: None)
        admitting = asyncio.get_running_loop().create_task(guard.admit())
        guard.close()  # the client left
        assert await admitting is None
        guard.start()  # what the server does once admitted
        await asyncio.sleep(0.05)
        mine = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return len(mine)

    assert asyncio.run(run()) == 0

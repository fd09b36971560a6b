"""The proxy's ``session-auth`` decides access: the node's stored labels (static and command
labels as last reported) against the user's current roles, and the locks in force; and the
two routes a proxy feeds its nodes from (``/internal/v1/locks``, ``/internal/v1/roles``).

Called through the internal handler as the proxy calls it, over both stores.
"""

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict

from jumpgate.control_plane import keys
from jumpgate.control_plane import locks as lock_module
from jumpgate.control_plane.errors import StoreUnavailable
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.nodes import NodeInfo
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.control_plane.store import Put
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.events import http_event
from jumpgate.protocol import certs, models
from jumpgate.protocol.resources import Conditions, LockTarget, Metadata, Role, RoleSpec
from tests.functional.conftest import Platform

ROLES = [
    Role(
        metadata=Metadata(name="prod-only"),
        spec=RoleSpec(allow=Conditions(logins=["ubuntu", "root"], node_labels={"env": "prod"})),
    ),
    Role(
        metadata=Metadata(name="no-db"), spec=RoleSpec(deny=Conditions(node_labels={"role": "db"}))
    ),
    Role(metadata=Metadata(name="no-root"), spec=RoleSpec(deny=Conditions(logins=["root"]))),
]
NODES = {
    "web": {"env": "prod", "role": "web"},
    "db": {"env": "prod", "role": "db"},
    "dev": {"env": "dev"},
}


@dataclass
class Node:
    host_id: str
    public_key: str


class Cluster:
    """A tenant with the roles and nodes above, and users made straight in the store."""

    def __init__(self, platform: Platform, tenant: str = "acme") -> None:
        self.platform = platform
        self.plane: ControlPlane = platform.plane
        self.tenant = tenant
        self.plane.create_tenant(tenant, admin="alice", logins=["root"])
        for role in ROLES:
            self.plane.roles.create(tenant, role)
        self.nodes = {name: self._join(name, labels) for name, labels in NODES.items()}

    def _join(self, name: str, labels: dict[str, str]) -> Node:
        token = self.plane.tokens.create(
            self.tenant, system_roles=["node"], ttl=timedelta(minutes=5)
        )
        key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
        joined = self.plane.tokens.join(
            self.tenant, token=token.token, public_key=key, nodename=name
        )
        # labels as the node's heartbeat reports them (static and command labels together)
        info = NodeInfo(name, "127.0.0.1", "test", labels)
        self.plane.nodes.set_presence(self.tenant, joined.host_id, proxy="p1", info=info)
        return Node(joined.host_id, key)

    def user(self, name: str, roles: list[str]) -> str:
        """A user holding ``roles``; their record's id (what a certificate names)."""
        self.plane.users.add(self.tenant, name, logins=["ubuntu"], roles=roles)
        record, _ = self.plane.users.get(self.tenant, name)
        return record.id

    def session_auth(self, user: str, user_id: str, node: str, login: str = "") -> dict[str, Any]:
        target = self.nodes[node]
        body = {
            "tenant": self.tenant,
            "host_id": target.host_id,
            "public_key": target.public_key,
            "user": user,
            "user_id": user_id,
            "login": login,
        }
        answer = self.platform.internal("/internal/v1/session-auth", body)
        assert answer["statusCode"] == 200, answer
        return dict(json.loads(answer["body"]))


@pytest.fixture
def cluster(platform: Platform) -> Cluster:
    return Cluster(platform)


ACCESS = [
    (["prod-only", "no-db"], "db", "", "node 'db' is denied to you by role 'no-db': see jump ls"),
    (["prod-only"], "dev", "", "your roles do not allow node 'dev': see jump ls"),
    (
        ["prod-only", "no-root"],
        "web",
        "root",
        "login 'root' is denied to you by your roles: jump status lists yours",
    ),
    (
        ["prod-only"],
        "web",
        "admin",
        "your roles do not allow login 'admin' on node 'web': see jump ls",
    ),
    (["prod-only"], "web", "ubuntu", None),
    (["prod-only", "no-root"], "web", "", None),
    (["prod-only", "gone"], "web", "root", None),
    (["no-db"], "web", "", "your roles do not allow node 'web': see jump ls"),
]


@pytest.mark.parametrize(
    ("roles", "node", "login", "refused"),
    ACCESS,
    ids=[
        "denied-by-deny-labels",
        "denied-no-allow-match",
        "denied-login",
        "login-not-allowed-there",
        "allowed-with-login",
        "allowed-ssh-J-some-login",
        "role-removed-since-grants-nothing",
        "deny-only-role-allows-nothing",
    ],
)
def test_roles_decide_access_to_a_node(
    cluster: Cluster, roles: list[str], node: str, login: str, refused: str | None
) -> None:
    bob = cluster.user("bob", roles)
    verdict = cluster.session_auth("bob", bob, node, login)
    assert verdict == {"node_refused": None, "user_refused": None, "access_refused": refused}


def test_labels_are_the_ones_last_reported(cluster: Cluster) -> None:
    """A command label that changes moves the node in or out of a role's reach."""
    bob = cluster.user("bob", ["prod-only"])
    assert cluster.session_auth("bob", bob, "dev")["access_refused"] is not None
    info = NodeInfo("dev", "127.0.0.1", "test", {"env": "prod"})
    cluster.plane.nodes.set_presence("acme", cluster.nodes["dev"].host_id, proxy="p1", info=info)
    assert cluster.session_auth("bob", bob, "dev")["access_refused"] is None


def test_a_role_change_applies_to_the_next_connection(cluster: Cluster) -> None:
    bob = cluster.user("bob", ["prod-only"])
    assert cluster.session_auth("bob", bob, "web")["access_refused"] is None
    changed = Role(
        metadata=Metadata(name="prod-only"),
        spec=RoleSpec(allow=Conditions(logins=["ubuntu"], node_labels={"env": "staging"})),
    )
    cluster.plane.roles.put("acme", changed)
    assert cluster.session_auth("bob", bob, "web")["access_refused"] == (
        "your roles do not allow node 'web': see jump ls"
    )


# A lock that names no node and no login stops the user everywhere (the API too): the
# verdict says so as the user refused; one naming a node or a login refuses this access.
LOCKS = [
    (LockTarget(user="bob"), "", "user_refused", "user 'bob'"),
    (LockTarget(role="prod-only"), "", "user_refused", "role 'prod-only'"),
    (LockTarget(node="web"), "", "access_refused", "node 'web'"),
    (LockTarget(login="ubuntu"), "ubuntu", "access_refused", "login 'ubuntu'"),
    (LockTarget(user="bob", node="web"), "", "access_refused", "user 'bob'"),
    (LockTarget(login="ubuntu"), "", None, ""),
    (LockTarget(user="carol"), "ubuntu", None, ""),
    (LockTarget(node="db"), "ubuntu", None, ""),
]


@pytest.mark.parametrize(
    ("target", "login", "refused_as", "who"),
    LOCKS,
    ids=[
        "user-lock",
        "role-lock",
        "node-lock",
        "login-lock",
        "user-on-node-lock",
        "login-lock-unknown-login-left-to-node",
        "another-users-lock",
        "another-nodes-lock",
    ],
)
def test_locks_refuse_what_they_match(
    cluster: Cluster, target: LockTarget, login: str, refused_as: str | None, who: str
) -> None:
    bob = cluster.user("bob", ["prod-only"])
    cluster.user("carol", ["prod-only"])
    allowed: dict[str, str | None] = dict.fromkeys(
        ("node_refused", "user_refused", "access_refused")
    )
    assert cluster.session_auth("bob", bob, "web", login) == allowed
    lock = cluster.plane.locks.create("acme", target, message="incident 42")
    expected = dict(allowed)
    if refused_as is not None:
        expected[refused_as] = f"{who} is locked (incident 42): ask a tenant admin"
    assert cluster.session_auth("bob", bob, "web", login) == expected
    cluster.plane.locks.remove("acme", lock.name)
    assert cluster.session_auth("bob", bob, "web", login) == allowed


def test_a_node_lock_by_uuid_refuses_too(cluster: Cluster) -> None:
    bob = cluster.user("bob", ["prod-only"])
    cluster.plane.locks.create("acme", LockTarget(node=cluster.nodes["web"].host_id))
    refused = cluster.session_auth("bob", bob, "web")["access_refused"]
    host_id = cluster.nodes["web"].host_id
    assert refused == f"node {host_id!r} is locked (locked by an admin): ask a tenant admin"


def test_an_expired_lock_refuses_nothing(cluster: Cluster) -> None:
    bob = cluster.user("bob", ["prod-only"])
    cluster.plane.locks.create("acme", LockTarget(node="web"), ttl=timedelta(minutes=1))
    assert cluster.session_auth("bob", bob, "web")["access_refused"] is not None
    cluster.platform.clock.advance(timedelta(minutes=1, seconds=1))
    assert cluster.session_auth("bob", bob, "web")["access_refused"] is None


@pytest.mark.parametrize(
    "target",
    [
        LockTarget(user="bob"),
        LockTarget(role="prod-only"),
        LockTarget(node="web"),
        LockTarget(login="ubuntu"),
    ],
    ids=["user", "role", "node", "login"],
)
def test_another_tenants_lock_never_applies(platform: Platform, target: LockTarget) -> None:
    acme = Cluster(platform, "acme")
    other = Cluster(platform, "other")
    bob = acme.user("bob", ["prod-only"])
    other.user("bob", ["prod-only"])
    other.plane.locks.create("other", target, message="theirs")
    assert acme.session_auth("bob", bob, "web", "ubuntu") == {
        "node_refused": None,
        "user_refused": None,
        "access_refused": None,
    }


def test_a_refused_user_or_node_is_not_judged_for_access(cluster: Cluster) -> None:
    """Access is only decided for a user and node that are who they say."""
    cluster.user("bob", ["prod-only"])
    verdict = cluster.session_auth("bob", "not-bobs-id", "dev")
    assert (
        verdict["user_refused"] == "certificate was issued to an earlier user 'bob': run jump login"
    )
    assert verdict["access_refused"] is None


def _feed(platform: Platform) -> dict[str, Any]:
    answer = platform.internal("/internal/v1/locks", {})
    assert answer["statusCode"] == 200, answer
    return dict(json.loads(answer["body"]))


def test_lock_feed_names_every_tenants_locks_and_roles_revision(platform: Platform) -> None:
    acme = Cluster(platform, "acme")
    Cluster(platform, "other")
    assert _feed(platform)["locks"] == []
    mine = platform.plane.locks.create("acme", LockTarget(user="bob"), message="m")
    theirs = platform.plane.locks.create("other", LockTarget(node="web"))
    short = platform.plane.locks.create("other", LockTarget(role="x"), ttl=timedelta(minutes=1))
    feed = _feed(platform)
    assert sorted((t["tenant"], t["lock"]["metadata"]["name"]) for t in feed["locks"]) == sorted(
        [("acme", mine.name), ("other", theirs.name), ("other", short.name)]
    )
    assert set(feed["role_revisions"]) == {"acme", "other"}
    before = feed["role_revisions"]["acme"]
    acme.plane.roles.put("acme", Role(metadata=Metadata(name="fresh")))
    platform.clock.advance(timedelta(minutes=1, seconds=1))
    feed = _feed(platform)
    assert feed["role_revisions"]["acme"] != before
    assert [t["lock"]["metadata"]["name"] for t in feed["locks"] if t["tenant"] == "other"] == [
        theirs.name
    ]


def _definitions(platform: Platform, tenant: str, names: list[str]) -> dict[str, Any]:
    return platform.internal("/internal/v1/roles", {"tenant": tenant, "names": names})


def test_role_definitions_are_those_that_exist_in_that_tenant(platform: Platform) -> None:
    Cluster(platform, "acme")
    other = Cluster(platform, "other")
    other.plane.roles.create("other", Role(metadata=Metadata(name="theirs")))
    answer = _definitions(platform, "acme", ["prod-only", "gone", "access", "theirs"])
    assert answer["statusCode"] == 200, answer
    roles = json.loads(answer["body"])["roles"]
    assert [r["metadata"]["name"] for r in roles] == ["prod-only", "access"]
    assert roles[0]["spec"]["allow"]["node_labels"] == {"env": "prod"}
    assert roles[1]["metadata"]["revision"] == "preset"
    assert all(r["metadata"]["revision"] for r in roles)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tenant": "acme", "names": ["r"] * 65}, "names"),
        ({"tenant": "acme"}, "names"),
        ({"tenant": "../acme", "names": ["r"]}, "tenant"),
    ],
    ids=["too-many-names", "no-names", "bad-tenant"],
)
def test_role_definitions_bad_request_is_one_line(
    platform: Platform, body: dict[str, Any], field: str
) -> None:
    Cluster(platform, "acme")
    answer = platform.internal("/internal/v1/roles", body)
    assert answer["statusCode"] in (400, 422), answer
    detail = json.loads(answer["body"])["detail"]
    assert field in detail
    assert "\n" not in detail


def test_the_proxys_client_reads_the_feed_and_definitions_typed(platform: Platform) -> None:
    """``ControlPlaneClient.lock_feed`` and ``role_definitions`` over the real internal
    handler, as the daemon wires them: what the lock watch and the node's questions get."""
    Cluster(platform, "acme")
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    client = ControlPlaneClient(invoke)
    lock = platform.plane.locks.create("acme", LockTarget(node="web"), message="m")
    feed = asyncio.run(client.lock_feed())
    assert feed is not None
    assert [(t.tenant, t.lock) for t in feed.locks] == [("acme", lock)]
    assert set(feed.role_revisions) == {"acme"}
    assert asyncio.run(client.lock_feed(feed.revision)) is None  # nothing changed since
    roles = asyncio.run(client.role_definitions("acme", ["no-db", "gone"]))
    assert [role.name for role in roles] == ["no-db"]
    with pytest.raises(ControlPlaneError) as refused:
        asyncio.run(client.role_definitions("../acme", ["no-db"]))
    assert refused.value.status == 400


def _feed_page(platform: Platform, **body: str) -> tuple[int, dict[str, Any]]:
    answer = platform.internal("/internal/v1/locks", body)
    assert answer["statusCode"] == 200, answer
    return len(answer["body"]), dict(json.loads(answer["body"]))


def test_a_poll_with_nothing_changed_is_answered_in_a_few_bytes(platform: Platform) -> None:
    """Each proxy polls every second: the whole feed each time (1.3 MB at 3,000 locks) cost
    every proxy and the control plane that each second, for nothing changed. A proxy names
    the revision it holds; any lock or role written moves it."""
    acme = Cluster(platform, "acme")
    locks = platform.plane.locks
    for i in range(20):
        locks.create("acme", LockTarget(login=f"l{i}"), message="x" * 200)
    _, first = _feed_page(platform)
    assert len(first["locks"]) == 20
    held = first["revision"]
    size, same = _feed_page(platform, revision=held)
    assert same == {
        "locks": [],
        "role_revisions": {},
        "revision": held,
        "unchanged": True,
        "next_cursor": "",
    }
    assert size < 200
    writes: list[Callable[[], object]] = [
        lambda: locks.create("acme", LockTarget(user="bob")),
        lambda: locks.remove("acme", locks.list("acme")[0].name),
        lambda: acme.plane.roles.put("acme", Role(metadata=Metadata(name="fresh"))),
        lambda: locks.user_removed("acme", "bob", "u-bob"),
    ]
    for write in writes:
        write()
        _, moved = _feed_page(platform, revision=held)
        assert moved["unchanged"] is False
        assert moved["revision"] != held
        held = moved["revision"]


def test_every_lock_is_read_in_pages_of_bounded_size(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed was one answer of every lock on the platform: about 450 bytes a lock, so 14
    tenants at their 1,000 locks passed a Lambda's 6 MB answer, and no proxy could read any
    lock (live sessions would no longer end). It is read a page at a time."""
    monkeypatch.setattr(lock_module, "FEED_PAGE", 25)
    made = set()
    for tenant in ("acme", "beta"):
        Cluster(platform, tenant)
        for i in range(30):
            lock = platform.plane.locks.create(tenant, LockTarget(login=f"l{i}"), message="x" * 200)
            made.add((tenant, lock.name))
    read: set[tuple[str, str]] = set()
    sizes, cursor, revisions = [], "", set()
    for _ in range(10):
        size, page = _feed_page(platform, cursor=cursor)
        sizes.append(size)
        revisions.add(page["revision"])
        assert len(page["locks"]) <= 25
        read |= {(t["tenant"], t["lock"]["metadata"]["name"]) for t in page["locks"]}
        if cursor:
            assert page["role_revisions"] == {}  # once, on the first page
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert read == made
    assert len(sizes) == 3
    assert max(sizes) < 25 * 600
    assert len(revisions) == 1
    # the proxy's client reads every page into one reading
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    whole = asyncio.run(ControlPlaneClient(invoke).lock_feed())
    assert whole is not None
    assert {(t.tenant, t.lock.name) for t in whole.locks} == made
    assert set(whole.role_revisions) == {"acme", "beta"}


class _FeedBefore(BaseModel):
    """``LockFeed`` as the release before 0035 reads it (unknown fields refused)."""

    model_config = ConfigDict(extra="forbid")
    locks: list[models.TenantLock]
    role_revisions: dict[str, str] = {}


def test_a_proxy_of_before_pages_gets_what_it_got_before(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy still running the release before pages (a rolling deploy) POSTs no body and
    reads the answer with its own model, which refuses fields it does not know: it gets
    every lock in force, in the shape it knows."""
    monkeypatch.setattr(lock_module, "FEED_PAGE", 2)
    Cluster(platform, "acme")
    made = {platform.plane.locks.create("acme", LockTarget(login=f"l{i}")).name for i in range(3)}
    event = http_event(
        method="POST",
        path="/internal/v1/locks",
        query="",
        headers={"host": "internal", "content-type": "application/json"},
        body=b"",
        source_ip="127.0.0.1",
    )
    answer = make_internal_handler(platform.plane)(event, None)
    assert answer["statusCode"] == 200, answer
    feed = _FeedBefore.model_validate_json(answer["body"])
    assert {held.lock.name for held in feed.locks} == made
    assert set(feed.role_revisions) == {"acme"}


def test_a_lock_is_never_in_force_without_its_revision_moved(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy holding the revision reads nothing more: a lock written (or removed) while
    the revision's write failed (throttled) would go unseen by every proxy until another
    write, so both are one atomic write, or neither."""
    Cluster(platform, "acme")
    store = platform.plane.store
    locks = platform.plane.locks
    kept = locks.create("acme", LockTarget(user="carol"))
    put, atomic = store.put, store.atomic_write

    def revision_refused(ops: Any) -> None:
        if any(getattr(op, "key", "") == keys.POLICY_REVISION for op in ops):
            raise StoreUnavailable("throttled")

    def put_refused(tenant: str, key: str, value: bytes, **kw: Any) -> Any:
        revision_refused([Put(key, value)])
        return put(tenant, key, value, **kw)

    def atomic_refused(tenant: str, ops: Any) -> None:
        revision_refused(ops)
        atomic(tenant, ops)

    monkeypatch.setattr(store, "put", put_refused)
    monkeypatch.setattr(store, "atomic_write", atomic_refused)
    with pytest.raises(StoreUnavailable):
        locks.create("acme", LockTarget(user="bob"))
    with pytest.raises(StoreUnavailable):
        locks.remove("acme", kept.name)
    assert [lock.name for lock in locks.list("acme")] == [kept.name]

"""The session broker on fakes of its collaborators: no daemon, no sockets, no SSH.

Each refusal is checked for the line the user is shown, whether it reads as "cannot reach"
or "not allowed", and the audit event it leaves (only a user refused by the platform leaves
one: the other refusals name nothing the audit log would be asked about, as before the
broker); each session for its start and end events.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from jumpgate.edge_proxy.broker import (
    NOT_CHECKED,
    NOT_LOCATED,
    PROXY_FAILED,
    REJECTED_BURST,
    STOPPING,
    Caller,
    SessionBroker,
)
from jumpgate.edge_proxy.control import ControlPlaneError
from jumpgate.edge_proxy.errors import NodeUnreachable, Refused
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.names import pick_node
from jumpgate.protocol.tunnel_messages import SessionOrigin

PROXY = "proxy-1"
PUBLIC = "example.sh"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
WEB = "6f1c1e5e-0000-4000-8000-000000000001"
DB = "6f1c1e5e-0000-4000-8000-000000000002"
THEIRS = "6f1c1e5e-0000-4000-8000-000000000003"
FAR = "6f1c1e5e-0000-4000-8000-000000000004"
ALICE = Caller("acme", "alice", "u-alice", "root", "192.0.2.7:50000")
LOCKED = "user 'alice' is locked (offboarding): ask a tenant admin"
DENIED = "node 'web-1' is denied to you by role 'no-prod': see jump ls"


@dataclass(frozen=True)
class Held:
    """A tunnel held here, as the broker sees one."""

    tenant: str
    host_id: str
    nodename: str
    public_key: str = "ssh-ed25519 AAAA-node"


class FakeTunnels:
    """The registry's lookups over a list (names resolved by the real ``pick_node``)."""

    def __init__(self, held: Iterable[Held]) -> None:
        self.held = list(held)
        self.dropped: list[tuple[str, str]] = []

    def find(self, tenant: str, name: str, public_addr: str = "") -> Held:
        mine = [t for t in self.held if t.tenant == tenant]
        return pick_node(tenant, name, mine, public_addr)

    def drop(self, tenant: str, host_id: str) -> bool:
        here = [t for t in self.held if (t.tenant, t.host_id) == (tenant, host_id)]
        self.held = [t for t in self.held if t not in here]
        self.dropped.append((tenant, host_id))
        return bool(here)


@dataclass
class FakeControl:
    """The platform's answers: locks, removed nodes, where other proxies' nodes are."""

    locked: dict[str, str] = field(default_factory=dict)  # user: refusal
    removed: set[str] = field(default_factory=set)  # host ids
    elsewhere: dict[str, models.NodeLocation] = field(default_factory=dict)  # by name
    denied: dict[str, str] = field(default_factory=dict)  # host id: the roles' or a lock's line
    down: bool = False
    asked: list[models.SessionAuth] = field(default_factory=list)

    async def session_auth(self, body: models.SessionAuth) -> models.SessionVerdict:
        if self.down:
            raise ControlPlaneError(503, "jumpgate-internal failed (Unhandled)")
        self.asked.append(body)
        return models.SessionVerdict(
            node_refused="node removed" if body.host_id in self.removed else None,
            user_refused=self.locked.get(body.user),
            access_refused=self.denied.get(body.host_id),
        )

    async def locate(self, tenant: str, name: str) -> models.NodeLocation:
        if self.down:
            raise ControlPlaneError(503, "jumpgate-internal failed (Unhandled)")
        found = self.elsewhere.get(name)
        if found is None or found.tenant != tenant:
            raise ControlPlaneError(404, f"node {name!r} not found in cluster {tenant!r}")
        return found


class FakePipe:
    """A session's byte pipe: it ends when closed, and tells the broker so."""

    def __init__(self, broker: "Broker | None" = None) -> None:
        self.broker = broker
        self.ended = False
        self.bytes_to_node = 0
        self.bytes_to_user = 0
        self.told: list[str] = []

    def tell(self, line: str) -> None:
        self.told.append(line)

    def close(self) -> bool:
        self.end()
        return True

    def abandon(self) -> None:
        self.end()

    def end(self, to_node: int = 0, to_user: int = 0) -> None:
        if self.ended:
            return
        self.ended = True
        self.bytes_to_node, self.bytes_to_user = to_node, to_user
        if self.broker is not None:
            self.broker.ended(self)


@dataclass
class FakeLink:
    """The node link: records what it opened, or fails as told."""

    peering: bool = False
    fail: Exception | None = None
    hang_up: bool = False  # the node ends the session as soon as it opens
    opened: list[tuple[str, FakePipe]] = field(default_factory=list)
    origins: list[SessionOrigin | None] = field(default_factory=list)

    async def open(
        self,
        target: Held | models.NodeLocation,
        pipe: FakePipe,
        origin: SessionOrigin | None = None,
    ) -> None:
        self.origins.append(origin)
        if self.fail is not None:
            raise self.fail
        where = target.proxy if isinstance(target, models.NodeLocation) else "here"
        self.opened.append((f"{target.host_id}@{where}", pipe))
        if self.hang_up:
            pipe.end(3, 4)


@dataclass
class FakeAudit:
    events: list[tuple[EventType, str, str, datetime | None, dict[str, Any]]] = field(
        default_factory=list
    )

    def record(
        self,
        event_type: EventType,
        tenant: str,
        outcome: str,
        /,
        *,
        at: datetime | None = None,
        **fields: Any,
    ) -> None:
        self.events.append((event_type, tenant, outcome, at, fields))

    def types(self) -> list[tuple[str, str]]:
        return [(str(kind), outcome) for kind, _, outcome, _, _ in self.events]


Broker = SessionBroker[Held, FakePipe]


@dataclass
class World:
    broker: Broker
    control: FakeControl
    tunnels: FakeTunnels
    link: FakeLink
    audit: FakeAudit
    metrics: Metrics

    def open(self, name: str, caller: Caller = ALICE) -> FakePipe:
        pipe = FakePipe(self.broker)
        asyncio.run(self.broker.open(caller, name, pipe))
        return pipe

    def refused(self, name: str, caller: Caller = ALICE) -> Refused:
        with pytest.raises(Refused) as refused:
            self.open(name, caller)
        return refused.value


def world(
    *,
    control: FakeControl | None = None,
    link: FakeLink | None = None,
    held: Iterable[Held] = (),
    ids: Iterable[str] = (),
) -> World:
    control = control or FakeControl()
    tunnels = FakeTunnels(
        held
        or [
            Held("acme", WEB, "web-1"),
            Held("acme", DB, "db"),
            Held("globex", THEIRS, "payroll"),
        ]
    )
    link = link or FakeLink()
    audit, metrics = FakeAudit(), Metrics()
    ids = iter(ids or [f"session-{n}" for n in range(1, 100)])
    broker: Broker = SessionBroker(
        control,
        tunnels,
        link,
        audit,
        proxy_id=PROXY,
        public_addr=PUBLIC,
        metrics=metrics,
        clock=lambda: NOW,
        new_id=lambda: next(ids),
    )
    return World(broker, control, tunnels, link, audit, metrics)


@pytest.mark.parametrize(
    "name",
    ["web-1", "WEB-1", WEB, f"{WEB}.acme", f"web-1.acme.{PUBLIC}"],
    ids=["name", "name-any-case", "uuid", "uuid.tenant", "fqdn"],
)
def test_a_node_held_here_is_found_by_each_of_its_names(name: str) -> None:
    w = world()
    pipe = w.open(name)
    assert w.link.opened == [(f"{WEB}@here", pipe)]
    [asked] = w.control.asked
    assert (asked.tenant, asked.host_id, asked.user, asked.user_id) == (
        "acme",
        WEB,
        "alice",
        "u-alice",
    )


def test_a_session_is_audited_at_its_start_and_its_end() -> None:
    w = world()
    pipe = w.open("web-1")
    assert w.broker.live == [pipe]
    assert w.broker.session_id(pipe) == "session-1"
    pipe.end(to_node=10, to_user=250)
    assert w.broker.live == []
    start, end = w.audit.events
    session = {
        "origin": "proxy",
        "user": "alice",
        "login": "root",
        "server_id": WEB,
        "nodename": "web-1",
        "remote_addr": "192.0.2.7:50000",
        "session_id": "session-1",
    }
    assert start == (EventType.SESSION_START, "acme", "I", NOW, session)
    assert end == (
        EventType.SESSION_END,
        "acme",
        "I",
        NOW,
        {**session, "bytes_to_node": 10, "bytes_to_user": 250},
    )
    assert (w.metrics.sessions, w.metrics.bytes_in, w.metrics.bytes_out) == (1, 10, 250)


def test_the_node_is_told_the_session_id_and_the_users_address() -> None:
    """Decision 0030: the node names its events with the id the proxy's events have."""
    session_id = "0b9a3f6e-8a77-4c1e-9d8e-2f3c4b5a6d7e"
    w = world(ids=[session_id])
    w.open("web-1")
    assert w.link.origins == [SessionOrigin(session_id=session_id, addr="192.0.2.7", port=50000)]
    assert w.audit.events[0][4]["session_id"] == session_id


def test_a_node_that_hangs_up_at_once_still_gets_both_events() -> None:
    w = world(link=FakeLink(hang_up=True))
    w.open("web-1")
    assert w.audit.types() == [("session.start", "I"), ("session.end", "I")]
    assert w.broker.live == []


def test_a_node_on_another_proxy_is_reached_through_it_and_audited_with_it() -> None:
    far = models.NodeLocation(
        tenant="acme",
        host_id=FAR,
        nodename="far-1",
        public_key="ssh-ed25519 AAAA-far",
        proxy="proxy-2",
        peer_addr="10.0.0.2:3021",
    )
    w = world(control=FakeControl(elsewhere={"far-1": far}), link=FakeLink(peering=True))
    pipe = w.open("far-1")
    assert w.link.opened == [(f"{FAR}@proxy-2", pipe)]
    assert w.audit.events[0][4]["proxy"] == "proxy-2"


# Each refusal: the line the user reads, whether the node was out of reach (OpenSSH
# "connect failed") rather than the session not allowed, and the audit events it leaves:
# a session.rejected W event each, in the caller's tenant, except a refused user's auth W.
REFUSALS: list[tuple[str, dict[str, Any], str, Caller, str, bool, list[tuple[str, str]]]] = [
    (
        "unknown-node",
        {},
        "web-9",
        ALICE,
        "node 'web-9' is not online in cluster 'acme': see jump ls",
        True,
        [("session.rejected", "W")],
    ),
    (
        "another-tenants-node-by-name",
        {},
        "payroll",
        ALICE,
        "node 'payroll' is not online in cluster 'acme': see jump ls",
        True,
        [("session.rejected", "W")],
    ),
    (
        "another-tenants-node-by-uuid",
        {},
        f"{THEIRS}.globex",
        ALICE,
        f"node '{THEIRS}.globex' is not online in cluster 'acme': see jump ls",
        True,
        [("session.rejected", "W")],
    ),
    (
        "ambiguous-name",
        {"held": [Held("acme", WEB, "web"), Held("acme", DB, "web")]},
        "web",
        ALICE,
        f"2 nodes are named 'web': use a uuid ({WEB}, {DB})",
        True,
        [("session.rejected", "W")],
    ),
    (
        "unknown-anywhere-when-peering",
        {"link": FakeLink(peering=True)},
        "web-9",
        ALICE,
        "node 'web-9' not found in cluster 'acme'",
        True,
        [("session.rejected", "W")],
    ),
    (
        "platform-cannot-locate",
        {"link": FakeLink(peering=True), "control": FakeControl(down=True)},
        "web-9",
        ALICE,
        NOT_LOCATED,
        False,
        [("session.rejected", "W")],
    ),
    (
        "locked-user",
        {"control": FakeControl(locked={"alice": LOCKED})},
        "web-1",
        ALICE,
        LOCKED,
        False,
        [("auth", "W")],
    ),
    (
        "denied-by-roles",
        {"control": FakeControl(denied={WEB: DENIED})},
        "web-1",
        ALICE,
        DENIED,
        False,
        [("session.rejected", "W")],
    ),
    (
        "removed-node",
        {"control": FakeControl(removed={WEB})},
        "web-1",
        ALICE,
        "node 'web-1' is not online in cluster 'acme': see jump ls",
        True,
        [("session.rejected", "W")],
    ),
    (
        "platform-cannot-check",
        {"control": FakeControl(down=True)},
        "web-1",
        ALICE,
        NOT_CHECKED,
        False,
        [("session.rejected", "W")],
    ),
    (
        "node-offline",
        {"link": FakeLink(fail=NodeUnreachable("node 'web-1' did not answer: try again"))},
        "web-1",
        ALICE,
        "node 'web-1' did not answer: try again",
        True,
        [("session.rejected", "W")],
    ),
    (
        "proxy-fails",
        {"link": FakeLink(fail=RuntimeError("a bug"))},
        "web-1",
        ALICE,
        PROXY_FAILED,
        True,
        [("session.rejected", "W")],
    ),
]


@pytest.mark.parametrize(
    ("how", "name", "caller", "message", "unreachable", "events"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_each_refusal_says_why_in_one_line_and_leaves_its_audit(
    how: dict[str, Any],
    name: str,
    caller: Caller,
    message: str,
    unreachable: bool,
    events: list[tuple[str, str]],
) -> None:
    w = world(**how)
    refused = w.refused(name, caller)
    assert (str(refused), refused.unreachable) == (message, unreachable)
    assert "\n" not in str(refused)
    assert w.audit.types() == events
    assert w.link.opened == []
    assert w.broker.live == []
    assert w.metrics.sessions == 0


def test_a_login_the_certificate_lacks_is_audited_at_the_pace_of_rejections() -> None:
    """Decision 0030: asyncssh refused the certificate after its CA matched a tenant."""
    w = world()
    for _ in range(REJECTED_BURST + 3):
        w.broker.login_refused("acme", "root", "192.0.2.7:50000")
    w.broker.login_refused("acme", "root", "198.51.100.1:1")  # another source: its own pace
    assert len(w.audit.events) == REJECTED_BURST + 1
    kind, tenant, outcome, at, fields = w.audit.events[0]
    assert (kind, tenant, outcome, at) == (EventType.AUTH, "acme", "W", NOW)
    assert fields == {
        "origin": "proxy",
        "login": "root",
        "remote_addr": "192.0.2.7:50000",
        "error": "login 'root' refused: the certificate does not allow it, or is not valid now",
    }
    assert w.audit.events[-1][4]["remote_addr"] == "198.51.100.1:1"


def test_a_locked_users_refusal_is_audited_with_who_where_and_why() -> None:
    w = world(control=FakeControl(locked={"alice": LOCKED}))
    w.refused("web-1")
    [(kind, tenant, outcome, at, fields)] = w.audit.events
    assert (kind, tenant, outcome, at) == (EventType.AUTH, "acme", "W", NOW)
    assert fields == {
        "origin": "proxy",
        "user": "alice",
        "login": "root",
        "server_id": WEB,
        "nodename": "web-1",
        "remote_addr": "192.0.2.7:50000",
        "error": LOCKED,
    }
    assert w.metrics.handshake_failures["user_refused"] == 1


def test_a_refusal_is_audited_in_the_callers_tenant_with_the_node_as_asked() -> None:
    w = world()
    w.refused(f"{THEIRS}.globex")  # another tenant's node: nothing lands in that tenant
    [(kind, tenant, outcome, at, fields)] = w.audit.events
    assert (kind, tenant, outcome, at) == (EventType.SESSION_REJECTED, "acme", "W", NOW)
    assert fields == {
        "user": "alice",
        "login": "root",
        "nodename": f"{THEIRS}.globex",
        "remote_addr": "192.0.2.7:50000",
        "error": f"node '{THEIRS}.globex' is not online in cluster 'acme': see jump ls",
    }


def test_a_removed_node_loses_its_tunnel_and_its_live_sessions() -> None:
    w = world()
    live = w.open("web-1")
    other = w.open("db")
    w.control.removed.add(WEB)
    w.refused("web-1")  # the platform says so at the next session
    assert w.tunnels.dropped == [("acme", WEB)]
    assert [t.host_id for t in w.tunnels.held] == [DB, THEIRS]
    assert (live.ended, other.ended) == (True, False)
    assert w.audit.types() == [
        ("session.start", "I"),
        ("session.start", "I"),
        ("session.end", "I"),
        ("session.rejected", "W"),
    ]
    assert w.broker.live == [other]


def test_a_removal_seen_by_the_poll_ends_that_nodes_sessions_only() -> None:
    w = world()
    web, db = w.open("web-1"), w.open("db")
    w.broker.drop_removed("acme", WEB, "removed from the cluster")
    assert (web.ended, db.ended) == (True, False)
    w.broker.drop_removed("globex", DB, "removed from the cluster")  # same uuid elsewhere
    assert db.ended is False


def test_a_draining_proxy_opens_nothing_new_and_its_sessions_end() -> None:
    w = world()
    pipe = w.open("web-1")
    w.broker.draining = True
    refused = w.refused("db")
    assert (str(refused), refused.unreachable) == (STOPPING, True)
    assert w.control.asked[1:] == []  # not even asked
    assert asyncio.run(w.broker.wait_ended(0.01)) is False
    pipe.close()
    assert asyncio.run(w.broker.wait_ended(0.01)) is True
    assert w.audit.types()[-1] == ("session.end", "I")


def test_a_session_the_roles_refuse_is_audited_and_never_reaches_the_node() -> None:
    w = world(control=FakeControl(denied={WEB: DENIED}))
    w.refused(f"web-1.acme.{PUBLIC}")  # the event names the node reached, as the start would
    assert w.link.origins == []  # the node side was never asked for
    [(kind, tenant, outcome, at, fields)] = w.audit.events
    assert (kind, tenant, outcome, at) == (EventType.SESSION_REJECTED, "acme", "W", NOW)
    assert fields == {
        "origin": "proxy",
        "user": "alice",
        "login": "root",
        "server_id": WEB,
        "nodename": "web-1",
        "remote_addr": "192.0.2.7:50000",
        "error": DENIED,
    }
    assert w.open("db").ended is False  # another node the roles allow


@pytest.mark.parametrize(
    ("caller", "login"),
    [
        (ALICE, ""),
        (replace(ALICE, login_is_nodes=True), "root"),
    ],
    ids=["ssh-J-login-unknown", "proxycommand-login-is-the-nodes"],
)
def test_the_platform_is_told_the_login_only_when_it_is_the_nodes(
    caller: Caller, login: str
) -> None:
    w = world()
    w.open("web-1", caller)
    [asked] = w.control.asked
    assert asked.login == login


def test_live_sessions_name_their_caller_and_node() -> None:
    w = world()
    caller = replace(ALICE, roles=("dev",))
    pipe = w.open("web-1", caller)
    [live] = w.broker.sessions()
    assert (live.pipe, live.tenant, live.caller, live.server_id, live.nodename) == (
        pipe,
        "acme",
        caller,
        WEB,
        "web-1",
    )
    w.broker.end_reason(pipe, "locked: user 'alice' is locked (x): ask a tenant admin")
    pipe.close()
    assert w.broker.sessions() == []
    assert w.audit.events[-1][4]["reason"] == (
        "locked: user 'alice' is locked (x): ask a tenant admin"
    )

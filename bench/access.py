"""What roles and locks cost: a session start's access decision, and ``jump ls``.

(a) A session start decides with ``protocol.policy``: the user's ``AccessChecker`` built from
    5 roles of 5 label matchers each (exact, list, glob, regular expression), the login
    checked against the node's labels, and 20 locks checked against the session (none
    matches, so all are read). Measured against the same session start with no roles (what
    it costs today: nothing), in process; target: <= 1 ms added per decision. Then the same
    through the control plane (SQLite store in a temporary directory): what ``session-auth``
    does today (the node's key, the user's record) against that plus the user's roles read
    and resolved, the decision, and the tenant's locks read.
(b) ``jump ls`` over 10,000 nodes: ``GET /v1/nodes`` through the API's handler in process
    (the handler Lambda runs, signed as jump signs it), for a user holding the preset
    ``access`` role (every node, so no filtering) against one holding the 5 roles; target:
    <= 1.2x. Also the filter alone: ``AccessChecker.visible`` over the 10,000 node records.

(c) The lock feed each proxy polls every second, over 3,000 locks (3 tenants at 1,000, each
    message 200 characters), through the internal handler as a proxy's client reads it: a
    poll with nothing changed (docs/decisions/0035), against a whole reading, which is what
    every poll cost before (one answer of every lock). Bytes are the answers' bodies.

Every loop is bounded in count; figures are medians.
"""

import argparse
import asyncio
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane import keys
from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.handlers.api import make_handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.control_plane.locks import FEED_PAGE
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.records import NodeRecord, UserRecord
from jumpgate.control_plane.secrets import MasterKey, SecretBox
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.edge_proxy.control import ControlPlaneClient
from jumpgate.edge_proxy.events import decode_response, http_event
from jumpgate.protocol import certs, models, signing
from jumpgate.protocol.policy import AccessChecker, Subject, lock_applies, traits_of
from jumpgate.protocol.resources import LockTarget, Role

TENANT = "bench"
PASSWORD = "correct horse battery staple"
ENVS = ("dev", "staging", "qa", "prod")
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
TEAMS = ("web", "db", "cache", "batch")


def bench_roles() -> list[Role]:
    """5 roles of 5 matchers each: a list, a glob, a regular expression, an exact value and a
    fifth of each kind in turn; only the last role allows the session's node."""
    fifth = ["t0", ["t1", "t9"], "t2*", "^t[3]$", "t4"]
    return [
        Role.model_validate(
            {
                "metadata": {"name": f"team{i}"},
                "spec": {
                    "allow": {
                        "logins": ["{{internal.logins}}", f"app{i}"],
                        "node_labels": {
                            "env": ["dev", "staging", "prod"],
                            "region": "us-*" if i % 2 else "*-west-*",
                            "team": f"^({TEAMS[i % 4]}|{TEAMS[(i + 1) % 4]})-[0-9]+$",
                            "os": "ubuntu",
                            "tier": fifth[i],
                        },
                        "rules": [{"resources": ["node"], "verbs": ["list", "read"]}],
                    },
                    "deny": {"logins": ["root"]},
                    "options": {"max_session_ttl": "8h"},
                },
            }
        )
        for i in range(5)
    ]


def bench_locks() -> list[LockTarget]:
    """20 locks, none of which stops the session measured."""
    kinds = ("user", "role", "node", "login")
    return [LockTarget.model_validate({kinds[n % 4]: f"other{n}"}) for n in range(20)]


def node_labels(n: int) -> dict[str, str]:
    """Node ``n``'s labels, each drawn on its own (the same every run)."""
    draw = random.Random(n)
    return {
        "env": draw.choice(ENVS),
        "region": draw.choice(REGIONS),
        "team": f"{draw.choice(TEAMS)}-{draw.randrange(10)}",
        "os": draw.choice(("ubuntu", "ubuntu", "debian")),
        "tier": f"t{draw.randrange(10)}",
    }


SESSION_LABELS = {
    "env": "prod",
    "region": "us-west-2",
    "team": "web-3",
    "os": "ubuntu",
    "tier": "t4",
}


def per_call_us(call: Callable[[], object], *, calls: int, rounds: int = 7) -> float:
    """Median over ``rounds`` of the mean microseconds of ``calls`` calls."""
    means = []
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            call()
        means.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(means)


def decision_in_process(calls: int) -> tuple[float, float]:
    """(a): microseconds of a session start's decision, without roles and with them."""
    roles, locks = bench_roles(), bench_locks()
    traits = traits_of(["alice"])
    subject = Subject(
        user="alice",
        user_id="u1",
        roles=[r.name for r in roles],
        node_names=("n1", "web"),
        login="alice",
    )

    def without() -> bool:
        return True  # today a session start decides nothing about roles or locks

    def decide() -> bool:
        checker = AccessChecker(roles, traits)
        allowed = checker.login_access("web", SESSION_LABELS, "alice").allowed
        return allowed and not any(lock_applies(target, subject) for target in locks)

    assert decide(), "the measured session must be allowed, so every check runs"
    return per_call_us(without, calls=calls), per_call_us(decide, calls=calls)


def open_plane(directory: Path) -> ControlPlane:
    return ControlPlane(
        SQLiteStore(directory / "state.db"),
        SecretBox(MasterKey.from_bytes(secrets.token_bytes(32))),
        audit=SQLiteAuditStore(directory / "audit.db"),
        recordings=LocalRecordingStore(directory / "recordings"),
        settings=Settings(bcrypt_rounds=4),
    )


def add_nodes(plane: ControlPlane, count: int) -> list[NodeRecord]:
    """``count`` joined nodes with labels (by the join path for the first, then written as
    the join writes them: 10,000 joins would sign 10,000 host certificates for nothing)."""
    token = plane.tokens.create(TENANT, system_roles=["node"], ttl=timedelta(hours=1)).token
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    first = plane.tokens.join(TENANT, token=token, public_key=key, nodename="node0")
    template, _ = plane.nodes.get(TENANT, first.host_id)
    records = []
    now = datetime.now(UTC)
    for n in range(count):
        host_id = first.host_id if n == 0 else secrets.token_hex(16)
        record = replace(
            template,
            host_id=host_id,
            nodename=f"node{n}",
            labels=SESSION_LABELS if n == 0 else node_labels(n),
            seen=now,
        )
        plane.store.put(TENANT, keys.node(host_id), record.to_bytes())
        records.append(record)
    return records


Member = tuple[UserRecord, ed25519.Ed25519PrivateKey, str]


def member(plane: ControlPlane, name: str, roles: list[str]) -> Member:
    """A signed-up user holding ``roles``, a key and its certificate (the issuing path)."""
    invite = plane.users.add(TENANT, name, logins=["alice"], roles=roles)
    plane.users.signup(TENANT, invite.token, PASSWORD)
    record, _ = plane.users.get(TENANT, name)
    key = ed25519.Ed25519PrivateKey.generate()
    issued = plane.login.issue(
        TENANT, record, key.public_key(), ttl=timedelta(hours=1), now=plane.clock.now()
    )
    return record, key, issued.certificate


def control_plane_path(plane: ControlPlane, node: NodeRecord, calls: int) -> tuple[float, float]:
    """(a) through the control plane: microseconds per session-auth, without and with roles."""
    record, _, _ = member(plane, "carol", [r.name for r in bench_roles()])
    for target in bench_locks():
        plane.locks.create(TENANT, target)

    def today() -> object:
        plane.nodes.authenticate_tunnel(TENANT, node.host_id, node.public_key)
        return plane.users.check_access(TENANT, record.name, record.id)

    def with_roles() -> bool:
        found = plane.nodes.authenticate_tunnel(TENANT, node.host_id, node.public_key)
        user = plane.users.check_access(TENANT, record.name, record.id)
        checker = plane.roles.checker(TENANT, user)
        subject = Subject(
            user.name, user.id, checker.role_names, (found.host_id, found.nodename), "alice"
        )
        allowed = checker.login_access(found.nodename, found.labels, "alice").allowed
        return allowed and plane.locks.matching(TENANT, subject) is None

    assert with_roles(), "the measured session must be allowed, so every check runs"
    assert len(plane.roles.checker(TENANT, record).roles) == 5
    return per_call_us(today, calls=calls), per_call_us(with_roles, calls=calls)


def list_once(handler: Any, who: Member) -> tuple[float, int] | None:
    """(b): milliseconds of one ``GET /v1/nodes`` as ``who`` and the nodes answered; None
    if the API refuses ``who`` the listing."""
    _, key, certificate = who
    host = f"{TENANT}.localhost:3080"
    request = signing.SignedRequest(
        "GET", host, "/v1/nodes", "", int(time.time()), secrets.token_urlsafe(18), b""
    )
    headers = {"host": host, **signing.headers(key, certificate, request)}
    event = http_event(
        method="GET", path="/v1/nodes", query="", headers=headers, body=b"", source_ip="::1"
    )
    began = time.perf_counter()
    answer = decode_response(handler(event, None))
    took = (time.perf_counter() - began) * 1000
    if answer.status == 403:
        return None
    assert answer.status == 200, answer.body[:300]
    return took, len(json.loads(answer.body)["nodes"])


def list_nodes_ms(
    plane: ControlPlane, members: list[Member], samples: int
) -> list[tuple[float, int] | None]:
    """(b): for each member, the median milliseconds of ``GET /v1/nodes`` and the nodes
    answered (None if refused); the members take turns, so a machine whose load changes
    during the run weighs on each alike."""
    handler = make_handler(plane)
    for who in members:
        list_once(handler, who)  # the first of each warms the resolver
    took: list[list[float]] = [[] for _ in members]
    shown: list[int | None] = [None for _ in members]
    for _ in range(samples):
        for n, who in enumerate(members):
            answer = list_once(handler, who)
            if answer is not None:
                took[n].append(answer[0])
                shown[n] = answer[1]
    return [
        None if count is None else (statistics.median(times), count)
        for times, count in zip(took, shown, strict=True)
    ]


EVERY_NODE = Role.model_validate(
    {
        "metadata": {"name": "zz-every-node"},  # a user's roles are checked in name order
        "spec": {
            "allow": {
                "logins": ["{{internal.logins}}"],
                "node_labels": {"*": "*"},
                "rules": [{"resources": ["node"], "verbs": ["list"]}],
            }
        },
    }
)


def listing(plane: ControlPlane, samples: int) -> None:
    """(b): the listing for a user holding the preset ``access`` (every node), for one
    holding the 5 roles, and for one holding them and a last role reaching every node (the
    same answer as ``access``, each node checked against the 5 roles first)."""
    names = [r.name for r in bench_roles()]
    everyone = member(plane, "dave", ["access"])
    restricted = member(plane, "erin", names)
    widest = member(plane, "frank", [*names, EVERY_NODE.name])
    plain, filtered, every = list_nodes_ms(plane, [everyone, restricted, widest], samples)
    assert plain is not None
    plain_ms, plain_count = plain
    views = plane.nodes.list(TENANT)
    roles = plane.roles.resolve(TENANT, restricted[0].roles)

    def only_visible() -> list[object]:
        checker = AccessChecker(roles, traits_of(restricted[0].logins))  # as each request
        return [v for v in views if checker.visible(v.record.labels)]

    filter_ms = per_call_us(only_visible, calls=1, rounds=samples) / 1000
    visible = len(only_visible())
    print(f"(b) jump ls: GET /v1/nodes through the API handler, {len(views)} nodes")
    print(f"  preset access (every node)            {plain_ms:8.1f} ms  {plain_count:>6} nodes")
    print(f"  the filter alone (visible x {len(views)})    {filter_ms:8.1f} ms  {visible:>6} shown")
    if filtered is None or every is None:
        print("  5 roles x 5 matchers: refused (this API lists nodes for the access role only);")
        ratio = (plain_ms + filter_ms) / plain_ms
        verdict = "meets" if ratio <= 1.2 else "MISSES"
        print(f"  listing + filter, estimated: {ratio:.2f}x ({verdict} target <= 1.2x)")
        return
    for label, (took, count) in (
        ("5 roles x 5 matchers", filtered),
        ("the 5 roles + one reaching every node", every),
    ):
        ratio = took / plain_ms
        verdict = "meets" if ratio <= 1.2 else "MISSES"
        print(f"  {label:<38}{took:8.1f} ms  {count:>6} nodes  {ratio:.2f}x ({verdict} <= 1.2x)")


def lock_feed(plane: ControlPlane, locks: int, samples: int) -> None:
    """(c): a poll with nothing changed against a whole reading, in ms and bytes."""
    handler = make_internal_handler(plane)
    sizes: list[int] = []

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer = dict(handler(event, None))
        sizes.append(len(answer["body"]))
        return answer

    per_tenant = 1000
    for t in range((locks + per_tenant - 1) // per_tenant):
        tenant = f"locked{t}"
        plane.tenants.create(tenant, admin="admin", logins=["root"])
        for i in range(min(per_tenant, locks - t * per_tenant)):
            plane.locks.create(tenant, LockTarget(login=f"l{i}"), message="x" * 200)
    client = ControlPlaneClient(invoke)

    def timed(revision: str) -> tuple[float, int, models.LockFeed | None]:
        sizes.clear()
        began = time.perf_counter()
        feed = asyncio.run(client.lock_feed(revision))
        return (time.perf_counter() - began) * 1000, sum(sizes), feed

    whole = [timed("") for _ in range(samples)]
    feed = whole[-1][2]
    assert feed is not None
    assert len(feed.locks) >= locks
    same = [timed(feed.revision) for _ in range(samples)]
    assert all(answer is None for _, _, answer in same)
    whole_ms = statistics.median(ms for ms, _, _ in whole)
    same_ms = statistics.median(ms for ms, _, _ in same)
    pages = (len(feed.locks) + FEED_PAGE - 1) // FEED_PAGE
    print(f"(c) the lock feed, each proxy each second, {len(feed.locks)} locks")
    print(f"  a whole reading (every poll before 0035) {whole_ms:8.1f} ms  {whole[-1][1]:>9} bytes")
    print(f"    in {pages} pages of at most {FEED_PAGE}")
    print(f"  a poll with nothing changed              {same_ms:8.2f} ms  {same[-1][1]:>9} bytes")
    print(f"  a poll costs {same_ms / whole_ms:.4f}x of a whole reading while nothing changes")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="decisions a round (7 rounds)")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=9, help="listings each way")
    parser.add_argument("--locks", type=int, default=3000, help="locks in the feed (c)")
    args = parser.parse_args()

    without, decide = decision_in_process(args.calls)
    print(f"(a) session start's access decision, in process ({args.calls} x 7 decisions)")
    print(f"  no roles (today: no decision)          {without:9.2f} us")
    print(f"  5 roles x 5 matchers, login, 20 locks  {decide:9.2f} us")
    added = decide - without
    verdict = "meets" if added <= 1000 else "MISSES"
    print(f"  added per session start: {added:.1f} us ({verdict} target <= 1000 us)")

    with tempfile.TemporaryDirectory() as directory:
        plane = open_plane(Path(directory))
        plane.tenants.create(TENANT, admin="admin", logins=["root"])
        for role in [*bench_roles(), EVERY_NODE]:
            plane.roles.create(TENANT, role)
        nodes = add_nodes(plane, args.nodes)
        path_calls = max(args.calls // 10, 50)
        today, with_roles = control_plane_path(plane, nodes[0], path_calls)
        print(f"(a) through the control plane, SQLite store ({path_calls} x 7 session-auth calls)")
        print(f"  today: node key, user record           {today:9.1f} us")
        print(f"  + roles read, decision, 20 locks read  {with_roles:9.1f} us")
        print(f"  added per session-auth: {with_roles - today:.1f} us ({with_roles / today:.2f}x)")
        listing(plane, args.samples)
        lock_feed(plane, args.locks, args.samples)
        plane.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

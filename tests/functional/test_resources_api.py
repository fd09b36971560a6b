"""Roles, locks and users through the API: written with revisions, audited with the actor,
and every bad input refused in one line with nothing changed."""

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.nodes import NodeInfo
from jumpgate.protocol import certs
from tests.functional.conftest import Platform, Session

ROLE = {
    "metadata": {"name": "dev"},
    "spec": {"allow": {"logins": ["{{internal.logins}}"], "node_labels": {"env": "dev"}}},
}


def _events(platform: Platform, *types: str) -> list[dict[str, Any]]:
    now = platform.clock.now()
    query = Query(
        "acme", now - timedelta(hours=1), now + timedelta(seconds=1), types=frozenset(types)
    )
    return [e.model_dump() for e in platform.plane.audit.store.search(query).events]


def _state(platform: Platform) -> Any:
    """Everything a refused write could have changed: roles, users, locks."""
    plane = platform.plane
    return (
        [role.model_dump() for role in plane.roles.list("acme")],
        [(u.name, u.roles, u.logins) for u in plane.users.list("acme")],
        [lock.model_dump() for lock in plane.locks.list("acme")],
    )


@pytest.fixture
def alice(platform: Platform) -> Session:
    return platform.admin_session()


def test_roles_are_created_read_replaced_and_removed_with_revisions(
    platform: Platform, alice: Session
) -> None:
    created = platform.call("POST", "/v1/roles", ROLE, session=alice)
    assert created.status == 201, created.body
    first = created.body["metadata"]["revision"]
    assert first
    read = platform.call("GET", "/v1/roles/dev", session=alice)
    assert read.body == created.body
    names = [
        r["metadata"]["name"]
        for r in platform.call("GET", "/v1/roles", session=alice).body["roles"]
    ]
    assert names == ["access", "admin", "auditor", "dev"]
    changed = {**ROLE, "metadata": {"name": "dev", "revision": first}, "spec": {}}
    replaced = platform.call("PUT", "/v1/roles/dev", changed, session=alice)
    assert replaced.status == 200, replaced.body
    assert replaced.body["metadata"]["revision"] != first
    assert platform.call("DELETE", "/v1/roles/dev", session=alice).status == 204
    assert platform.call("GET", "/v1/roles/dev", session=alice).status == 404
    audited = [
        (e["type"], e["user"], e["name"])
        for e in _events(platform, "role.created", "role.updated", "role.deleted")
    ]
    assert sorted(audited) == [
        ("role.created", "alice", "dev"),
        ("role.deleted", "alice", "dev"),
        ("role.updated", "alice", "dev"),
    ]


def test_a_preset_is_changed_by_put_and_audited_as_an_update(
    platform: Platform, alice: Session
) -> None:
    auditor = platform.call("GET", "/v1/roles/auditor", session=alice).body
    assert auditor["metadata"]["revision"] == "preset"
    auditor["metadata"]["description"] = "reads the log"
    answer = platform.call("PUT", "/v1/roles/auditor", auditor, session=alice)
    assert answer.status == 200, answer.body
    assert [e["type"] for e in _events(platform, "role.created", "role.updated")] == [
        "role.updated"
    ]


def test_users_are_read_and_updated_and_audited(platform: Platform, alice: Session) -> None:
    platform.plane.users.add("acme", "bob", logins=["bob"], roles=["access"])
    assert platform.call("POST", "/v1/roles", ROLE, session=alice).status == 201
    bob = platform.call("GET", "/v1/users/bob", session=alice)
    assert bob.status == 200
    assert (bob.body["roles"], bob.body["logins"]) == (["access"], ["bob"])
    body = {
        "roles": ["dev", "auditor"],
        "logins": ["bob", "deploy"],
        "revision": bob.body["revision"],
    }
    updated = platform.call("PUT", "/v1/users/bob", body, session=alice)
    assert updated.status == 200, updated.body
    assert (updated.body["roles"], updated.body["logins"]) == (
        ["auditor", "dev"],
        ["bob", "deploy"],
    )
    kept = platform.call("PUT", "/v1/users/bob", {"logins": ["bob"]}, session=alice).body
    assert kept["roles"] == ["auditor", "dev"]
    updates = [
        (e["user"], e["name"], e["roles"], e["logins"]) for e in _events(platform, "user.update")
    ]
    assert sorted(updates) == [
        ("alice", "bob", ["auditor", "dev"], ["bob"]),
        ("alice", "bob", ["auditor", "dev"], ["bob", "deploy"]),
    ]


def test_locks_are_created_listed_removed_and_audited(platform: Platform, alice: Session) -> None:
    body = {"target": {"role": "auditor"}, "message": "audit  freeze", "ttl_seconds": 3600}
    created = platform.call("POST", "/v1/locks", body, session=alice)
    assert created.status == 201, created.body
    lock = created.body
    assert lock["spec"]["created_by"] == "alice"
    assert lock["spec"]["message"] == "audit freeze"
    listed = platform.call("GET", "/v1/locks", session=alice).body["locks"]
    assert listed == [lock]
    assert (
        platform.call("DELETE", f"/v1/locks/{lock['metadata']['name']}", session=alice).status
        == 204
    )
    assert platform.call("GET", "/v1/locks", session=alice).body["locks"] == []
    events = _events(platform, "lock.created", "lock.deleted")
    assert sorted(e["type"] for e in events) == ["lock.created", "lock.deleted"]
    for event in events:
        assert (event["user"], event["name"], event["target_role"]) == (
            "alice",
            lock["metadata"]["name"],
            "auditor",
        )
        assert event["message"] == "audit freeze"
        assert event["expires"] == lock["spec"]["expires"].replace("Z", "+00:00")


def test_a_role_lock_refuses_its_holders_api_calls_until_removed(
    platform: Platform, alice: Session
) -> None:
    invite = platform.plane.users.add("acme", "carol", logins=[], roles=["auditor"])
    carol = platform.signup("acme", invite.token, "carol")
    platform.next_code()
    assert platform.login(carol).status == 200
    lock = platform.call("POST", "/v1/locks", {"target": {"role": "auditor"}}, session=alice).body
    refused = platform.call("GET", "/v1/audit/events", session=carol)
    assert (refused.status, refused.detail) == (
        403,
        "role 'auditor' is locked (locked by an admin): ask a tenant admin",
    )
    assert platform.call("GET", "/v1/status", session=alice).status == 200  # not an auditor
    platform.call("DELETE", f"/v1/locks/{lock['metadata']['name']}", session=alice)
    assert platform.call("GET", "/v1/audit/events", session=carol).status == 200


def test_a_node_or_login_lock_does_not_refuse_api_calls(platform: Platform, alice: Session) -> None:
    for target in ({"node": "web-1"}, {"login": "root"}):
        assert platform.call("POST", "/v1/locks", {"target": target}, session=alice).status == 201
    assert platform.call("GET", "/v1/status", session=alice).status == 200


def _node(platform: Platform, name: str, labels: dict[str, str]) -> None:
    plane = platform.plane
    token = plane.tokens.create("acme", system_roles=["node"], ttl=timedelta(minutes=5))
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    joined = plane.tokens.join("acme", token=token.token, public_key=key, nodename=name)
    info = NodeInfo(hostname=name, addr="127.0.0.1:22", version="1", labels=labels)
    plane.nodes.set_presence("acme", joined.host_id, proxy="p1", info=info)


@pytest.mark.parametrize(
    ("node_labels", "deny", "shown"),
    [
        ({"*": "*"}, {}, ["db-1", "dev-1", "prod-1"]),
        ({"env": "dev"}, {}, ["dev-1"]),
        ({"env": ["dev", "prod"]}, {}, ["dev-1", "prod-1"]),
        ({"env": "^(dev|prod)$"}, {"team": "db*"}, ["dev-1"]),
        ({}, {}, []),
    ],
    ids=["everything", "one-value", "list", "regex-minus-denied-glob", "no-labels-no-nodes"],
)
def test_node_listing_shows_only_what_the_roles_allow(
    platform: Platform,
    alice: Session,
    node_labels: dict[str, Any],
    deny: dict[str, str],
    shown: list[str],
) -> None:
    _node(platform, "dev-1", {"env": "dev"})
    _node(platform, "prod-1", {"env": "prod", "team": "db-main"})
    _node(platform, "db-1", {"env": "staging", "team": "db-main"})
    role = {
        "metadata": {"name": "viewer"},
        "spec": {
            "allow": {
                "logins": ["ops"],
                "node_labels": node_labels,
                "rules": [{"resources": ["node"], "verbs": ["list"]}],
            },
            "deny": {"node_labels": deny},
        },
    }
    assert platform.call("POST", "/v1/roles", role, session=alice).status == 201
    invite = platform.plane.users.add("acme", "vic", logins=[], roles=["viewer"])
    vic = platform.signup("acme", invite.token, "vic")
    platform.next_code()
    assert platform.login(vic).status == 200
    nodes = platform.call("GET", "/v1/nodes", session=vic).body["nodes"]
    assert sorted(n["nodename"] for n in nodes) == shown
    everything = platform.call("GET", "/v1/nodes", session=alice).body["nodes"]
    assert len(everything) == 3  # admin: every node


BAD: list[tuple[str, str, str, Any, int, str]] = [
    (
        "user-add-unknown-role",
        "POST",
        "/v1/users",
        {"name": "dan", "roles": ["access", "nope"]},
        400,
        "role 'nope' not found: create it first (jumpctl create -f FILE) or see jumpctl get roles",
    ),
    (
        "user-update-unknown-role",
        "PUT",
        "/v1/users/bob",
        {"roles": ["ghost"]},
        400,
        "role 'ghost' not found: create it first (jumpctl create -f FILE) or see jumpctl get roles",
    ),
    (
        "user-update-stale-revision",
        "PUT",
        "/v1/users/bob",
        {"roles": ["auditor"], "revision": "stale"},
        409,
        "user 'bob' changed since you read it: read it again (jumpctl get user/bob) "
        "and make your change there",
    ),
    (
        "role-invalid-regex",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "bad"}, "spec": {"allow": {"node_labels": {"env": "^(dev$"}}}},
        400,
        "spec.allow.node_labels.env",
    ),
    (
        "role-label-wrong-type",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "bad"}, "spec": {"allow": {"node_labels": {"env": 5}}}},
        400,
        "spec.allow.node_labels.env",
    ),
    (
        "role-unknown-key",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "bad"}, "spec": {"alow": {}}},
        400,
        "spec.alow",
    ),
    # A trailing newline passed ``^...$`` (``$`` matches before it): a second "admin" that
    # lists like the preset, and logins no OS account has.
    (
        "role-name-preset-with-newline",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "admin\n"}},
        400,
        "is not a valid name",
    ),
    (
        "role-login-with-newline",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "bad"}, "spec": {"allow": {"logins": ["root\n"]}}},
        400,
        "spec.allow.logins",
    ),
    (
        "user-login-with-newline",
        "PUT",
        "/v1/users/bob",
        {"logins": ["root\n"]},
        400,
        "logins",
    ),
    (
        "user-role-with-newline",
        "PUT",
        "/v1/users/bob",
        {"roles": ["admin\n"]},
        400,
        "roles",
    ),
    (
        "role-exists",
        "POST",
        "/v1/roles",
        {"metadata": {"name": "dev"}},
        409,
        "role 'dev' exists already: replace it with jumpctl create -f",
    ),
    (
        "role-stale-revision",
        "PUT",
        "/v1/roles/dev",
        {"metadata": {"name": "dev", "revision": "stale"}},
        409,
        "role 'dev' changed since you read it: read it again (jumpctl get role/dev) "
        "and make your change there",
    ),
    (
        "role-name-not-the-path",
        "PUT",
        "/v1/roles/dev",
        {"metadata": {"name": "other"}},
        400,
        "metadata.name 'other' is not the role addressed ('dev'): rename by creating the new "
        "role and removing the old",
    ),
    (
        "rm-preset-held",
        "DELETE",
        "/v1/roles/access",
        None,
        400,
        "role 'access' is a preset and cannot be removed: change it with jumpctl edit role/access",
    ),
    (
        "rm-role-held",
        "DELETE",
        "/v1/roles/dev",
        None,
        400,
        "role 'dev' is held by bob: take it from them first "
        "(jumpctl users update NAME --set-roles ...)",
    ),
    ("rm-role-unknown", "DELETE", "/v1/roles/nope", None, 404, "role 'nope' not found"),
    (
        "lock-empty-target",
        "POST",
        "/v1/locks",
        {"target": {}},
        400,
        "a lock needs a target: --user, --role, --node or --login",
    ),
    ("lock-no-target", "POST", "/v1/locks", {"message": "x"}, 400, "target"),
    (
        "lock-on-a-role-of-the-caller",
        "POST",
        "/v1/locks",
        {"target": {"role": "admin"}},
        400,
        "this lock would stop you too",
    ),
    ("lock-on-the-caller", "POST", "/v1/locks", {"target": {"user": "alice"}}, 400, "stop you"),
    (
        "lock-ttl-and-expires",
        "POST",
        "/v1/locks",
        {"target": {"user": "bob"}, "ttl_seconds": 600, "expires": "2099-01-01T00:00:00Z"},
        400,
        "give a lock --ttl or --expires, not both",
    ),
    (
        "lock-expired",
        "POST",
        "/v1/locks",
        {"target": {"user": "bob"}, "expires": "2001-01-01T00:00:00Z"},
        400,
        "lock expiry is in the past",
    ),
    # A lock's message is written on the stopped user's terminal (the node's stderr line, the
    # ProxyCommand's): an escape sequence there would be run by it (OSC 52 fills the
    # clipboard the user pastes into a shell next).
    (
        "lock-message-escape-sequence",
        "POST",
        "/v1/locks",
        {"target": {"user": "bob"}, "message": "bye \x1b]52;c;cm0gLXJmIH4K\x07"},
        400,
        "message",
    ),
    (
        "user-lock-message-escape-sequence",
        "PUT",
        "/v1/users/bob/lock",
        {"message": "bye \x1b[2J\x1b[Hlogin again: "},
        400,
        "message",
    ),
    # Names are lower-case: a lock naming "Alice" or role "Admin" matched nobody, silently.
    ("lock-user-upper-case", "POST", "/v1/locks", {"target": {"user": "Bob"}}, 400, "'Bob'"),
    ("lock-role-upper-case", "POST", "/v1/locks", {"target": {"role": "Dev"}}, 400, "'Dev'"),
    ("lock-login-bad", "POST", "/v1/locks", {"target": {"login": "Root"}}, 400, "'Root'"),
    ("rm-lock-unknown", "DELETE", "/v1/locks/0123", None, 404, "lock '0123' not found"),
]


def test_a_lock_on_the_callers_own_id_is_refused_too(platform: Platform, alice: Session) -> None:
    """The id is how a removed user is stopped; naming the caller's own would stop them as
    their name does, and nobody could lift it through the API."""
    me, _ = platform.plane.users.get("acme", "alice")
    before = _state(platform)
    answer = platform.call("POST", "/v1/locks", {"target": {"user_id": me.id}}, session=alice)
    assert answer.status == 400, answer.body
    assert "this lock would stop you too" in answer.detail
    assert _state(platform) == before
    assert platform.call("GET", "/v1/locks", session=alice).status == 200


@pytest.mark.parametrize(
    "named",
    ["web-1", "WEB-1", "web-1.acme", "web-1.acme.localhost", "web-1.acme.localhost."],
    ids=["name", "upper-case", "in-cluster", "fqdn", "fqdn-dot"],
)
def test_a_node_lock_names_the_node_as_jump_ssh_does(
    platform: Platform, alice: Session, named: str
) -> None:
    """``jump ssh web-1.acme.localhost`` reaches node web-1: a lock naming it so must stop
    it (nodes and proxies compare a lock's node with the node's name and uuid)."""
    _node(platform, "web-1", {})
    created = platform.call("POST", "/v1/locks", {"target": {"node": named}}, session=alice)
    assert created.status == 201, created.body
    assert created.body["spec"]["target"]["node"] == "web-1"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_is_one_line_and_changes_nothing(
    platform: Platform,
    alice: Session,
    method: str,
    path: str,
    body: Any,
    status: int,
    detail: str,
) -> None:
    assert platform.call("POST", "/v1/roles", ROLE, session=alice).status == 201
    platform.plane.users.add("acme", "bob", logins=["bob"], roles=["access", "dev"])
    before = _state(platform)
    answer = platform.call(method, path, body, session=alice)
    assert answer.status == status, answer.body
    assert detail in answer.detail
    assert "\n" not in answer.detail
    assert len(answer.detail) < 200
    assert _state(platform) == before


def test_a_role_change_applies_to_the_next_call_without_a_new_login(
    platform: Platform, alice: Session
) -> None:
    role = {
        "metadata": {"name": "reader"},
        "spec": {"allow": {"rules": [{"resources": ["event"], "verbs": ["list"]}]}},
    }
    assert platform.call("POST", "/v1/roles", role, session=alice).status == 201
    invite = platform.plane.users.add("acme", "dora", logins=[], roles=["reader"])
    dora = platform.signup("acme", invite.token, "dora")
    platform.next_code()
    assert platform.login(dora).status == 200
    assert platform.call("GET", "/v1/audit/events", session=dora).status == 200
    read = platform.call("GET", "/v1/roles/reader", session=alice).body
    read["spec"]["deny"] = {"rules": [{"resources": ["event"], "verbs": ["*"]}]}
    assert platform.call("PUT", "/v1/roles/reader", read, session=alice).status == 200
    refused = platform.call("GET", "/v1/audit/events", session=dora)
    assert (refused.status, refused.detail) == (
        403,
        "user 'dora' may not list event: ask a tenant admin",
    )
    update = {"roles": ["auditor"]}
    assert platform.call("PUT", "/v1/users/dora", update, session=alice).status == 200
    assert platform.call("GET", "/v1/audit/events", session=dora).status == 200

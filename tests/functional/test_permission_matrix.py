"""Every route of the OpenAPI document, called by a user of each preset role and of a custom
role: what each may do is what the rules say, with 0 surprises (docs/decisions/0034).

The routes come from the document the API serves, so a route added without an expectation
here fails the test. Path parameters name real resources of the tenant (a node, a user, a
token, a role, a lock, another user's recording), so an allowed call succeeds (2xx) and a
refusal is the rules' (403 with one line), not "not found". A recording of another user is
"hidden" (404) to a user who may read only their own.
"""

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import certs
from jumpgate.protocol.resources import LockTarget, Role
from tests.functional.conftest import Platform, Session
from tests.functional.test_isolation_matrix import PUBLIC
from tests.functional.test_recordings import _upload

CALLERS = ("admin", "access", "auditor", "custom")

CUSTOM = Role.model_validate(
    {
        "metadata": {"name": "custom"},
        "spec": {
            "allow": {
                "rules": [
                    {"resources": ["role"], "verbs": ["list", "read"]},
                    {"resources": ["lock"], "verbs": ["*"]},
                ]
            },
            "deny": {"rules": [{"resources": ["lock"], "verbs": ["delete"]}]},
        },
    }
)
"""Reads roles, creates and lists locks, but may not remove one."""

OK, NO, HIDDEN = "ok", "deny", "hidden"
EXPECTED: dict[tuple[str, str], tuple[str, str, str, str]] = {
    # route: (admin, access, auditor, custom)
    ("GET", "/v1/status"): (OK, OK, OK, OK),
    ("GET", "/v1/nodes"): (OK, OK, NO, NO),
    ("DELETE", "/v1/nodes/{name}"): (OK, NO, NO, NO),
    ("GET", "/v1/users"): (OK, NO, NO, NO),
    ("POST", "/v1/users"): (OK, NO, NO, NO),
    ("GET", "/v1/users/{name}"): (OK, NO, NO, NO),
    ("PUT", "/v1/users/{name}"): (OK, NO, NO, NO),
    ("DELETE", "/v1/users/{name}"): (OK, NO, NO, NO),
    ("PUT", "/v1/users/{name}/lock"): (OK, NO, NO, OK),
    ("DELETE", "/v1/users/{name}/lock"): (OK, NO, NO, NO),
    ("GET", "/v1/tokens"): (OK, NO, NO, NO),
    ("POST", "/v1/tokens"): (OK, NO, NO, NO),
    ("DELETE", "/v1/tokens/{token}"): (OK, NO, NO, NO),
    ("GET", "/v1/audit/events"): (OK, NO, OK, NO),
    ("GET", "/v1/recordings"): (OK, OK, OK, NO),
    ("GET", "/v1/recordings/{session_id}"): (OK, HIDDEN, OK, NO),
    ("GET", "/v1/recordings/{session_id}/parts/{index}"): (OK, HIDDEN, OK, NO),
    ("POST", "/v1/recordings/{session_id}/verify"): (OK, HIDDEN, OK, NO),
    ("GET", "/v1/settings/recording"): (OK, NO, NO, NO),
    ("PUT", "/v1/settings/recording"): (OK, NO, NO, NO),
    ("GET", "/v1/roles"): (OK, NO, NO, OK),
    ("GET", "/v1/roles/{name}"): (OK, NO, NO, OK),
    ("POST", "/v1/roles"): (OK, NO, NO, NO),
    ("PUT", "/v1/roles/{name}"): (OK, NO, NO, NO),
    ("DELETE", "/v1/roles/{name}"): (OK, NO, NO, NO),
    ("GET", "/v1/locks"): (OK, NO, NO, OK),
    ("POST", "/v1/locks"): (OK, NO, NO, OK),
    ("DELETE", "/v1/locks/{name}"): (OK, NO, NO, NO),
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/users"): {"name": "newbie", "roles": ["access"], "logins": ["root"]},
    ("PUT", "/v1/users/{name}"): {"roles": ["auditor"]},
    ("PUT", "/v1/users/{name}/lock"): {"message": "matrix", "ttl_seconds": 60},
    ("POST", "/v1/tokens"): {"ttl_seconds": 300},
    ("PUT", "/v1/settings/recording"): {"mode": "off", "record_exec": False},
    ("POST", "/v1/roles"): {"metadata": {"name": "made"}},
    ("PUT", "/v1/roles/{name}"): {"metadata": {"name": "edited"}},
    ("POST", "/v1/locks"): {"target": {"login": "postgres"}, "message": "matrix"},
}


def _routes(platform: Platform, session: Session) -> set[tuple[str, str]]:
    document = platform.call("GET", "/v1/openapi.json", session=session)
    assert document.status == 200, document.body
    return {
        (method.upper(), path)
        for path, operations in document.body["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "delete", "patch"}
    } - PUBLIC


def _user(platform: Platform, name: str, roles: list[str]) -> Session:
    invite = platform.plane.users.add("acme", name, logins=["root"], roles=roles)
    session = platform.signup("acme", invite.token, name)
    platform.next_code()
    assert platform.login(session).status == 200
    return session


def _values(platform: Platform) -> dict[tuple[str, str], dict[str, str]]:
    """Real resources of acme for each route's parameters; every caller acts on the same."""
    plane = platform.plane
    for name in ("edited", "spare"):
        plane.roles.create("acme", Role.model_validate({"metadata": {"name": name}}))
    for name in ("bob", "carol"):
        plane.users.add("acme", name, logins=["root"], roles=["access"])
    join = plane.tokens.create("acme", system_roles=["node"], ttl=timedelta(minutes=5))
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    plane.tokens.join("acme", token=join.token, public_key=key, nodename="web-1")
    token = plane.tokens.create("acme", system_roles=["node"], ttl=timedelta(minutes=5))
    lock = plane.locks.create("acme", LockTarget(node="db-9"), message="spare")
    sid = _upload(platform, "acme", "bob", [b"bob's session\n"])[0]
    recording = {"session_id": sid, "index": "1"}
    return {
        ("DELETE", "/v1/nodes/{name}"): {"name": "web-1"},
        ("GET", "/v1/users/{name}"): {"name": "bob"},
        ("PUT", "/v1/users/{name}"): {"name": "bob"},
        ("DELETE", "/v1/users/{name}"): {"name": "bob"},
        ("PUT", "/v1/users/{name}/lock"): {"name": "carol"},
        ("DELETE", "/v1/users/{name}/lock"): {"name": "carol"},
        ("DELETE", "/v1/tokens/{token}"): {"token": token.token},
        ("GET", "/v1/recordings/{session_id}"): recording,
        ("GET", "/v1/recordings/{session_id}/parts/{index}"): recording,
        ("POST", "/v1/recordings/{session_id}/verify"): recording,
        ("GET", "/v1/roles/{name}"): {"name": "spare"},
        ("PUT", "/v1/roles/{name}"): {"name": "edited"},
        ("DELETE", "/v1/roles/{name}"): {"name": "spare"},
        ("DELETE", "/v1/locks/{name}"): {"name": lock.name},
    }


def _order(route: tuple[str, str]) -> tuple[bool, str, str]:
    """Deletes last, so what the other calls name still exists; unlock before remove."""
    method, path = route
    return (method == "DELETE", "" if path.endswith("/lock") else path, path)


def _outcome(status: int) -> str:
    if 200 <= status < 300:
        return OK
    if status == 403:
        return NO
    if status == 404:
        return HIDDEN
    return f"status {status}"


@pytest.mark.parametrize("caller", CALLERS, ids=list(CALLERS))
def test_every_route_answers_each_role_as_its_rules_say(platform: Platform, caller: str) -> None:
    alice = platform.admin_session()
    platform.plane.roles.create("acme", CUSTOM)
    session = alice if caller == "admin" else _user(platform, "caller", [caller])
    routes = _routes(platform, alice)
    assert routes - set(EXPECTED) == set(), "routes with no expectation"
    assert set(EXPECTED) - routes == set(), "expectations of routes the API does not serve"
    values = _values(platform)
    column = CALLERS.index(caller)
    surprises = []
    for method, path in sorted(routes, key=_order):
        filled = path
        for name, value in values.get((method, path), {}).items():
            filled = filled.replace("{" + name + "}", value)
        answer = platform.call(method, filled, BODIES.get((method, path)), session=session)
        expected = EXPECTED[(method, path)][column]
        got = _outcome(answer.status)
        if got != expected:
            surprises.append((method, path, expected, got, answer.detail))
        if got == NO:
            assert answer.detail.startswith(f"user '{session.user}' may not "), answer.detail
            assert "\n" not in answer.detail
    assert surprises == []


@pytest.mark.parametrize(
    ("role", "listed"),
    [("access", ["own"]), ("auditor", ["other", "own"]), ("admin", ["other", "own"])],
    ids=["access-own-only", "auditor-all", "admin-all"],
)
def test_recordings_list_shows_only_the_callers_own_unless_allowed_for_all(
    platform: Platform, role: str, listed: list[str]
) -> None:
    platform.admin_session()
    caller = _user(platform, "caller", [role])
    ids = {
        "own": _upload(platform, "acme", "caller", [b"mine\n"])[0],
        "other": _upload(platform, "acme", "alice", [b"hers\n"])[0],
    }
    rows = platform.call("GET", "/v1/recordings", session=caller).body["recordings"]
    assert sorted(
        rows_id for rows_id in ids if ids[rows_id] in {r["session_id"] for r in rows}
    ) == (listed)
    other = platform.call("GET", f"/v1/recordings/{ids['other']}", session=caller)
    assert other.status == (200 if "other" in listed else 404)

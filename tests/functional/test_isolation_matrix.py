"""Every route of the API, called on one tenant with another tenant's credentials: refused.

The routes come from the OpenAPI document the API serves, so a new route is in the matrix
the day it is added. Path parameters name real resources of the tenant under attack (its
admin, a join token, a recording), so a refusal is not merely "not found". As a control, the
tenant's own admin gets past authentication on every route the matrix calls.
"""

import re
from typing import Any

import pytest

from tests.functional.conftest import Platform, Session
from tests.functional.test_recordings import _upload

PUBLIC = {
    ("GET", "/webapi/ping"),
    ("GET", "/v1/ca"),
    ("GET", "/v1/trust"),
    ("POST", "/v1/signup"),
    ("POST", "/v1/login"),
    ("POST", "/v1/join"),
}
"""Routes that take no credentials (they answer anyone, and only with the tenant's public
keys and addresses, signed or not, or after their own secret: an invite, a password with a
code, a join token)."""

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/tokens"): {"ttl_seconds": 300},
    ("POST", "/v1/users"): {"name": "mallory", "roles": ["admin"], "logins": ["root"]},
    ("PUT", "/v1/users/{name}/lock"): {"message": "matrix", "ttl_seconds": 60},
    ("PUT", "/v1/settings/recording"): {"mode": "off", "record_exec": False},
    ("PUT", "/v1/users/{name}"): {"roles": ["auditor"]},
    ("POST", "/v1/roles"): {"metadata": {"name": "planted"}},
    ("PUT", "/v1/roles/{name}"): {"metadata": {"name": "ops"}},
    ("POST", "/v1/locks"): {"target": {"user": "bob"}, "message": "matrix"},
}
ROLE, LOCK = "/v1/roles/{name}", "/v1/locks/{name}"
"""Routes whose ``{name}`` is a role's or a lock's, not a user's."""


def _routes(platform: Platform, admin: Session) -> list[tuple[str, str]]:
    document = platform.call("GET", "/v1/openapi.json", session=admin)
    assert document.status == 200, document.body
    routes = [
        (method.upper(), path)
        for path, operations in document.body["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "delete", "patch"}
    ]
    assert len(routes) >= 15, routes  # the matrix would prove little over a few routes
    return sorted(set(routes) - PUBLIC)


@pytest.fixture
def matrix(platform: Platform) -> tuple[Platform, Session, Session, dict[str, str]]:
    alice = platform.admin_session("acme", "alice")
    mallory = platform.admin_session("globex", "mallory")
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 600}, session=alice)
    assert token.status == 201, token.body
    bob = {"name": "bob", "roles": ["access"], "logins": ["root"]}
    assert platform.call("POST", "/v1/users", bob, session=alice).status == 201
    ops = {"metadata": {"name": "ops"}, "spec": {"allow": {"logins": ["root"]}}}
    assert platform.call("POST", "/v1/roles", ops, session=alice).status == 201
    lock = platform.call("POST", "/v1/locks", {"target": {"role": "ops"}}, session=alice)
    assert lock.status == 201, lock.body
    values = {
        "name": "bob",
        "role": "ops",
        "lock": lock.body["metadata"]["name"],
        "token": token.body["token"],
        "session_id": _upload(platform, "acme", "alice", [b"secret output"])[0],
        "index": "1",
    }
    return platform, alice, mallory, values


def _call(
    platform: Platform, method: str, route: str, values: dict[str, str], session: Session
) -> int:
    named = {ROLE: {"name": values["role"]}, LOCK: {"name": values["lock"]}}.get(route, {})
    path = re.sub(r"\{(\w+)\}", lambda m: {**values, **named}[m.group(1)], route)
    body = BODIES.get((method, route))
    return platform.call(method, path, body, tenant="acme", session=session).status


def test_every_route_refuses_another_tenants_credentials(
    matrix: tuple[Platform, Session, Session, dict[str, str]],
) -> None:
    platform, alice, mallory, values = matrix
    routes = _routes(platform, alice)
    answered = {route: _call(platform, *route, values, mallory) for route in routes}
    let_in = {route: status for route, status in answered.items() if status not in (401, 403)}
    assert let_in == {}
    # the control: the tenant's own admin is authenticated on every one of them
    own = {route: _call(platform, *route, values, alice) for route in routes}
    assert {route: status for route, status in own.items() if status in (401, 403)} == {}


def test_another_tenants_roles_and_locks_are_neither_seen_nor_touched(
    matrix: tuple[Platform, Session, Session, dict[str, str]],
) -> None:
    """Mallory, admin of globex, addressing her own tenant with acme's role and lock names."""
    platform, alice, mallory, values = matrix
    role, lock = values["role"], values["lock"]
    own = {"tenant": "globex", "session": mallory}
    assert platform.call("GET", f"/v1/roles/{role}", **own).status == 404
    assert platform.call("DELETE", f"/v1/roles/{role}", **own).status == 404
    assert platform.call("DELETE", f"/v1/locks/{lock}", **own).status == 404
    roles = platform.call("GET", "/v1/roles", **own).body["roles"]
    assert role not in {r["metadata"]["name"] for r in roles}
    assert platform.call("GET", "/v1/locks", **own).body["locks"] == []
    for path in ("/v1/roles", "/v1/locks"):
        assert "acme" not in str(platform.call("GET", path, **own).body)
    # acme's own are untouched
    assert platform.call("GET", f"/v1/roles/{role}", session=alice).status == 200
    locks = platform.call("GET", "/v1/locks", session=alice).body["locks"]
    assert [item["metadata"]["name"] for item in locks] == [lock]

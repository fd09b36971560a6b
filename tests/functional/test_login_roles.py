"""Certificates follow the user's roles: principals, lifetime, permits and the extensions a
node decides from (docs/decisions/0034). Parsed with cryptography, as a server would."""

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

from jumpgate.protocol.resources import LockTarget, Role
from tests.functional.conftest import Platform, Session


def _role(name: str, **spec: Any) -> Role:
    return Role.model_validate({"metadata": {"name": name}, "spec": spec})


def _user(platform: Platform, name: str, roles: list[str], logins: list[str]) -> Session:
    """A user of acme holding ``roles`` (each created first if not a preset), logged in."""
    invite = platform.plane.users.add("acme", name, logins=logins, roles=roles)
    session = platform.signup("acme", invite.token, name)
    platform.next_code()
    return session


def _cert(answer_body: dict[str, Any]) -> SSHCertificate:
    cert = load_ssh_public_identity(answer_body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    return cert


@pytest.fixture
def acme(platform: Platform) -> Platform:
    platform.admin_session()
    return platform


def test_denied_logins_are_not_principals_and_traits_are_carried(acme: Platform) -> None:
    acme.plane.roles.create(
        "acme",
        _role(
            "no-root",
            allow={"logins": ["{{internal.logins}}", "ubuntu"], "node_labels": {"*": "*"}},
            deny={"logins": ["root"]},
        ),
    )
    bob = _user(acme, "bob", ["no-root"], ["root", "dev"])
    answer = acme.login(bob)
    assert answer.status == 200, answer.body
    cert = _cert(answer.body)
    assert cert.valid_principals == [b"dev", b"ubuntu"]
    assert answer.body["logins"] == ["dev", "ubuntu"]
    assert answer.body["roles"] == ["no-root"]
    assert cert.extensions[b"jumpgate-roles"] == b"no-root"
    assert json.loads(cert.extensions[b"jumpgate-traits"]) == {"logins": ["root", "dev"]}


@pytest.mark.parametrize(
    ("max_ttl", "asked", "granted"),
    [
        ("2h", None, 2 * 3600),
        ("2h", 3600, 3600),
        ("2h", 7 * 86400, 2 * 3600),
        ("30h", 20 * 3600, 20 * 3600),
        ("30h", None, 12 * 3600),
    ],
    ids=["default-capped", "shorter-kept", "longer-capped", "role-allows-longer", "default-12h"],
)
def test_max_session_ttl_caps_the_certificate(
    acme: Platform, max_ttl: str, asked: int | None, granted: int
) -> None:
    acme.plane.roles.create(
        "acme",
        _role(
            "timed",
            allow={"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}},
            options={"max_session_ttl": max_ttl},
        ),
    )
    bob = _user(acme, "bob", ["timed"], ["dev"])
    answer = acme.login(bob, ttl_seconds=asked)
    assert answer.status == 200, answer.body
    cert = _cert(answer.body)
    now = int(acme.clock.now().timestamp())
    assert cert.valid_before - now == granted
    assert int(cert.extensions[b"jumpgate-valid-before"]) == cert.valid_before
    stated = answer.body["valid_before"].replace("Z", "+00:00")
    assert int(datetime.fromisoformat(stated).timestamp()) == cert.valid_before


def test_the_shortest_max_session_ttl_of_the_roles_wins(acme: Platform) -> None:
    for name, ttl in (("long", "10h"), ("short", "1h")):
        acme.plane.roles.create(
            "acme", _role(name, allow={"logins": ["dev"]}, options={"max_session_ttl": ttl})
        )
    bob = _user(acme, "bob", ["long", "short"], [])
    cert = _cert(acme.login(bob).body)
    assert timedelta(seconds=cert.valid_before - int(acme.clock.now().timestamp())) == (
        timedelta(hours=1)
    )


@pytest.mark.parametrize(
    ("options", "port", "agent"),
    [
        ({}, True, False),
        ({"forward_agent": True}, True, True),
        ({"port_forwarding": False}, False, False),
        ({"port_forwarding": False, "forward_agent": True}, False, True),
    ],
    ids=["defaults", "agent-on", "ports-off", "ports-off-agent-on"],
)
def test_options_decide_the_permit_extensions(
    acme: Platform, options: dict[str, bool], port: bool, agent: bool
) -> None:
    acme.plane.roles.create(
        "acme", _role("opts", allow={"logins": ["dev"], "node_labels": {"*": "*"}}, options=options)
    )
    bob = _user(acme, "bob", ["opts"], [])
    extensions = _cert(acme.login(bob).body).extensions
    assert b"permit-pty" in extensions
    assert (b"permit-port-forwarding" in extensions) is port
    assert (b"permit-agent-forwarding" in extensions) is agent


def test_ports_off_in_one_role_wins_over_another_role(acme: Platform) -> None:
    acme.plane.roles.create(
        "acme", _role("no-ports", allow={"logins": ["dev"]}, options={"port_forwarding": False})
    )
    bob = _user(acme, "bob", ["access", "no-ports"], ["dev"])
    extensions = _cert(acme.login(bob).body).extensions
    assert b"permit-port-forwarding" not in extensions
    assert b"permit-agent-forwarding" in extensions  # access grants it; any role may


def test_a_user_whose_roles_grant_no_login_logs_in_with_no_usable_principal(
    acme: Platform,
) -> None:
    carol = _user(acme, "carol", ["auditor"], ["root"])
    answer = acme.login(carol)
    assert answer.status == 200, answer.body
    cert = _cert(answer.body)
    assert answer.body["logins"] == []
    assert len(cert.valid_principals) == 1
    assert cert.valid_principals[0].startswith(b"-jumpgate-nologin-")
    assert acme.call("GET", "/v1/status", session=carol).status == 200


def test_a_user_lock_refuses_login(acme: Platform) -> None:
    bob = _user(acme, "bob", ["access"], ["dev"])
    acme.plane.locks.create("acme", LockTarget(user="bob"), message="incident 42")
    answer = acme.login(bob)
    assert answer.status == 403
    assert answer.detail == "user 'bob' is locked (incident 42): ask a tenant admin"

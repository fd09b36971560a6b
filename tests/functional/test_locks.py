"""Locking and removing users: the API refuses them at once, and so does the proxy's check.

``/internal/v1/session-auth`` is what the proxy asks for every new SSH connection; here it
is called through the internal handler with what the proxy reads from the certificate.
"""

import json
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

from jumpgate.protocol import certs
from tests.functional.conftest import Platform, Session


def _bob(platform: Platform, admin: Session, name: str = "bob") -> Session:
    invite = platform.call("POST", "/v1/users", {"name": name, "logins": [name]}, session=admin)
    assert invite.status == 201, invite.body
    user = platform.signup("acme", invite.body["invite_token"], name)
    platform.next_code()
    assert platform.login(user).status == 200
    return user


def _session_auth(platform: Platform, session: Session) -> dict[str, Any]:
    """What the proxy is told for a new connection of ``session``'s certificate."""
    cert = load_ssh_public_identity(session.certificate.encode())
    assert isinstance(cert, SSHCertificate)
    ext = {k.decode(): v.decode() for k, v in cert.extensions.items()}
    tenant = ext[certs.EXT_TENANT]
    token = platform.plane.tokens.create(tenant, system_roles=["node"], ttl=timedelta(minutes=5))
    key = certs.openssh_public(session.key.public_key())
    joined = platform.plane.tokens.join(tenant, token=token.token, public_key=key, nodename="n")
    body = {
        "tenant": tenant,
        "host_id": joined.host_id,
        "public_key": key,
        "user": ext[certs.EXT_USER],
        "user_id": ext.get(certs.EXT_USER_ID, ""),
    }
    answer = platform.internal("/internal/v1/session-auth", body)
    assert answer["statusCode"] == 200, answer
    return dict(json.loads(answer["body"]))


def test_locked_user_is_refused_everywhere_until_unlocked(platform: Platform) -> None:
    admin = platform.admin_session()
    bob = _bob(platform, admin)
    assert _session_auth(platform, bob) == {
        "node_refused": None,
        "user_refused": None,
        "access_refused": None,
    }
    locked = platform.call(
        "PUT", "/v1/users/bob/lock", {"message": "laptop  stolen"}, session=admin
    )
    assert locked.status == 200, locked.body
    assert locked.body["status"] == "locked"
    assert locked.body["lock"] == "laptop stolen (until unlocked)"
    refusal = "user 'bob' is locked (laptop stolen): ask a tenant admin"
    answer = platform.call("GET", "/v1/status", session=bob)
    assert (answer.status, answer.problem_type, answer.detail) == (403, "user-locked", refusal)
    assert _session_auth(platform, bob)["user_refused"] == refusal
    platform.next_code()
    relogin = platform.login(bob)
    assert (relogin.status, relogin.detail) == (403, refusal)
    [listed] = [
        u
        for u in platform.call("GET", "/v1/users", session=admin).body["users"]
        if u["name"] == "bob"
    ]
    assert listed["status"] == "locked"
    unlocked = platform.call("DELETE", "/v1/users/bob/lock", session=admin)
    assert unlocked.body["status"] == "active"
    assert unlocked.body["lock"] is None
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    assert _session_auth(platform, bob)["user_refused"] is None


def test_lock_with_a_ttl_lifts_by_itself(platform: Platform) -> None:
    admin = platform.admin_session()
    bob = _bob(platform, admin)
    body = {"message": "", "ttl_seconds": 600}
    locked = platform.call("PUT", "/v1/users/bob/lock", body, session=admin)
    assert locked.body["lock"].startswith("locked by an admin (until ")
    assert platform.call("GET", "/v1/status", session=bob).status == 403
    platform.clock.advance(timedelta(minutes=10, seconds=1))
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    assert _session_auth(platform, bob)["user_refused"] is None


def test_removed_user_and_a_later_namesake_cannot_use_old_certificates(
    platform: Platform,
) -> None:
    admin = platform.admin_session()
    old_bob = _bob(platform, admin)
    platform.call("DELETE", "/v1/users/bob", session=admin)
    assert _session_auth(platform, old_bob)["user_refused"] == (
        "user 'bob' no longer exists: ask a tenant admin"
    )
    new_bob = _bob(platform, admin)
    earlier = "certificate was issued to an earlier user 'bob': run jump login"
    answer = platform.call("GET", "/v1/status", session=old_bob)
    assert (answer.status, answer.detail) == (401, earlier)
    assert _session_auth(platform, old_bob)["user_refused"] == earlier
    assert platform.call("GET", "/v1/status", session=new_bob).status == 200
    assert _session_auth(platform, new_bob)["user_refused"] is None


def test_failed_logins_stop_new_logins_but_not_a_valid_certificate(platform: Platform) -> None:
    admin = platform.admin_session()
    bob = _bob(platform, admin)
    for _ in range(5):
        platform.call(
            "POST",
            "/v1/login",
            {
                "user": "bob",
                "password": "wrong-password!",
                "otp": "000000",
                "public_key": certs.openssh_public(bob.key.public_key()),
            },
        )
    platform.next_code()
    assert platform.login(bob).status == 403  # locked out of logging in
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    assert _session_auth(platform, bob)["user_refused"] is None
    platform.call("DELETE", "/v1/users/bob/lock", session=admin)
    platform.next_code()
    assert platform.login(bob).status == 200


def test_lock_bad_input_gets_one_line_and_changes_nothing(platform: Platform) -> None:
    admin = platform.admin_session()
    bob = _bob(platform, admin)
    cases = [
        ("alice", {"message": "x"}, 400, "you cannot lock yourself: ask another admin"),
        ("nobody", {"message": "x"}, 404, "user 'nobody' not found: see jumpctl users ls"),
        ("bob", {"message": "x" * 201}, 400, "message: must be at most 200 characters (201 given)"),
        ("bob", {"ttl_seconds": 5}, 400, None),
        ("bob", {"until": "never"}, 400, None),
    ]
    for name, body, status, detail in cases:
        answer = platform.call("PUT", f"/v1/users/{name}/lock", body, session=admin)
        assert answer.status == status, (name, body, answer.body)
        if detail is not None:
            assert answer.detail == detail
        assert "\n" not in answer.detail
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    not_admin = platform.call("PUT", "/v1/users/alice/lock", {}, session=bob)
    assert not_admin.status == 403
    globex = platform.admin_session("globex", "gadmin")
    cross = platform.call("PUT", "/v1/users/bob/lock", {}, session=globex)
    assert cross.status == 401  # globex's certificate is no key to acme
    own = platform.call("PUT", "/v1/users/bob/lock", {}, session=globex, tenant="globex")
    assert (own.status, own.detail) == (404, "user 'bob' not found: see jumpctl users ls")
    assert platform.call("GET", "/v1/status", session=bob).status == 200

"""Signup and login through the API handler: the happy path and every way it must refuse."""

import threading
from datetime import timedelta

import bcrypt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.users import check_password, decoy_hash, hash_password
from jumpgate.protocol import certs
from tests.functional.conftest import PASSWORD, Platform


def test_login_issues_certificate_for_users_logins(platform: Platform) -> None:
    session = platform.signup(
        "acme", platform.invite("acme", "alice", logins=["root", "ubuntu"]), "alice"
    )
    answer = platform.login(session)
    assert answer.status == 200, answer.body
    cert = load_ssh_public_identity(answer.body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    assert cert.type is SSHCertificateType.USER
    assert cert.valid_principals == [b"root", b"ubuntu"]
    assert cert.valid_before - int(platform.clock.now().timestamp()) == 12 * 3600
    assert cert.extensions[b"jumpgate-user"] == b"alice"
    assert cert.extensions[b"jumpgate-tenant"] == b"acme"
    assert cert.extensions[b"jumpgate-roles"] == b"access,admin"
    for ext in (b"permit-pty", b"permit-port-forwarding", b"permit-agent-forwarding"):
        assert ext in cert.extensions
    assert certs.openssh_public(cert.signature_key()) == answer.body["ca"]["user_ca_keys"][0]
    assert answer.body["ca"]["ca_pin"] == certs.ca_pin(answer.body["ca"]["host_ca_keys"][0])


def test_requested_ttl_is_honoured_and_capped_at_12h(platform: Platform) -> None:
    session = platform.admin_session()
    platform.next_code()
    short = platform.login(session, ttl_seconds=3600)
    assert short.status == 200
    cert = load_ssh_public_identity(short.body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    assert cert.valid_before - int(platform.clock.now().timestamp()) == 3600
    platform.next_code()
    long = platform.login(session, ttl_seconds=7 * 86400)
    cert = load_ssh_public_identity(long.body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    assert cert.valid_before - int(platform.clock.now().timestamp()) == 12 * 3600


def test_user_without_logins_gets_a_principal_that_matches_no_login(platform: Platform) -> None:
    session = platform.admin_session()
    invite = platform.call(
        "POST", "/v1/users", {"name": "bob", "logins": []}, session=session
    ).body["invite_token"]
    bob = platform.signup("acme", invite, "bob")
    answer = platform.login(bob)
    cert = load_ssh_public_identity(answer.body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    assert len(cert.valid_principals) == 1
    assert cert.valid_principals[0].startswith(b"-jumpgate-nologin-")


LOCKS = frozenset({"user.lock"})


def test_wrong_password_then_lock_on_sixth_try(platform: Platform) -> None:
    session = platform.admin_session()
    bad = {"user": "alice", "password": "wrong password!", "public_key": _pub(), "otp": "000000"}
    for attempt in range(4):
        platform.next_code()
        answer = platform.call("POST", "/v1/login", {**bad, "otp": platform.otp(session)})
        assert answer.status == 401, attempt
        assert answer.detail == "login failed: wrong user name, password or one-time code"
    platform.next_code()
    fifth = platform.call("POST", "/v1/login", {**bad, "otp": platform.otp(session)})
    assert fifth.status == 401  # still a failed login, which now locks: it says so
    assert fifth.problem_type == "login-failed"
    assert fifth.detail == (
        "login failed: wrong user name, password or one-time code; "
        "5 failed logins: user 'alice' is locked for 30m (or until an admin unlocks it)"
    )
    now = platform.clock.now()
    query = Query("acme", now - timedelta(hours=1), now + timedelta(seconds=1), types=LOCKS)
    locks = [e.model_dump() for e in platform.plane.audit.store.search(query).events]
    assert locks, "the automatic lock is not in the audit log"
    assert locks[0]["code"] == "J1006W"
    assert locks[0]["name"] == "alice"
    assert locks[0]["reason"] == "5 failed logins"
    platform.next_code()
    locked = platform.login(session)  # right password now, but locked
    assert locked.status == 403
    assert locked.problem_type == "user-locked"
    assert (
        locked.detail == "user is locked after 5 failed logins: try again in 29m30s or ask an admin"
    )
    platform.clock.advance(timedelta(minutes=29, seconds=30))
    assert platform.login(session).status == 200


def test_wrong_code_counts_as_a_failure(platform: Platform) -> None:
    session = platform.admin_session()
    platform.next_code()
    good_code = platform.otp(session)
    wrong = "000000" if good_code != "000000" else "111111"
    answer = platform.call(
        "POST",
        "/v1/login",
        {"user": "alice", "password": PASSWORD, "otp": wrong, "public_key": _pub()},
    )
    assert answer.status == 401
    assert answer.problem_type == "login-failed"
    user, _ = platform.plane.users.get("acme", "alice")
    assert user.failed_logins == 1


def test_replayed_code_is_refused(platform: Platform) -> None:
    session = platform.admin_session()
    replay = platform.login(session)  # same 30 s step, same code
    assert replay.status == 401
    assert replay.problem_type == "otp-replayed"
    assert replay.detail == "one-time code already used: wait for the next code and try again"
    platform.next_code()
    assert platform.login(session).status == 200


def test_unknown_user_fails_like_a_wrong_password_and_costs_a_bcrypt_check(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.admin_session()
    costs: list[bytes] = []  # "$2b$NN$": the algorithm and cost each check ran at
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        costs.append(hashed[:7])
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    body = {"user": "mallory", "password": PASSWORD, "otp": "123456", "public_key": _pub()}
    unknown = platform.call("POST", "/v1/login", body)
    assert unknown.status == 401
    assert unknown.detail == "login failed: wrong user name, password or one-time code"
    assert costs == [b"$2b$04$"]
    known = platform.call(
        "POST", "/v1/login", {**body, "user": "alice", "password": "nope nope nope"}
    )
    assert known.detail == unknown.detail
    assert costs == [b"$2b$04$"] * 2


def test_the_decoy_hash_is_checked_at_the_users_cost_and_matches_no_password() -> None:
    real = hash_password(PASSWORD, rounds=4)
    assert decoy_hash(4)[:7] == real[:7] == "$2b$04$"
    assert len(decoy_hash(4)) == len(real)
    assert decoy_hash(16).startswith("$2b$16$")
    for guess in ("", "DecoyNeverMatchesAnyPassword...", PASSWORD):
        assert not check_password(guess, decoy_hash(4))


def test_invite_is_single_use_and_expires(platform: Platform) -> None:
    token = platform.invite("acme", "alice")
    platform.signup("acme", token, "alice")
    again = platform.call("POST", "/v1/signup", {"token": token, "password": PASSWORD})
    assert again.status == 403
    assert again.problem_type == "invite-invalid"
    session = platform.admin_session("globex", "gadmin")
    invite = platform.call(
        "POST", "/v1/users", {"name": "bob", "logins": ["bob"]}, tenant="globex", session=session
    )
    platform.clock.advance(timedelta(hours=1, minutes=3))
    late = platform.call(
        "POST",
        "/v1/signup",
        {"token": invite.body["invite_token"], "password": PASSWORD},
        tenant="globex",
    )
    assert late.status == 403
    assert late.detail == "invite expired 3m ago: ask an admin for a new one: jumpctl users add"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "password: must be 12 to 128 characters (5 given)"),
        ("x" * 129, "password: must be 12 to 128 characters (129 given)"),
    ],
    ids=["too-short", "too-long"],
)
def test_password_length_is_enforced(platform: Platform, password: str, message: str) -> None:
    token = platform.invite("acme", "alice")
    answer = platform.call("POST", "/v1/signup", {"token": token, "password": password})
    assert answer.status == 400
    assert answer.detail == message


def test_concurrent_logins_with_one_code_have_one_winner(platform: Platform) -> None:
    session = platform.admin_session()
    platform.next_code()
    results: list[int] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait(timeout=10)
        results.append(platform.login(session).status)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [200, 401, 401, 401]


def _pub() -> str:
    return certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())

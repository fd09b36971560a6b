"""Resource routes, join tokens, tenant isolation and malformed input through the handler."""

import json
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jumpgate.control_plane.store.dynamodb import DynamoDBStore
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.protocol import certs
from jumpgate.protocol.problems import MAX_BODY_BYTES
from tests.functional.conftest import STATIC_PROXY_TOKEN, Platform, Session


def _host_key() -> str:
    return certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())


def _join(platform: Platform, token: str, tenant: str = "acme") -> tuple[int, Any]:
    answer = platform.call(
        "POST",
        "/v1/join",
        {"token": token, "public_key": _host_key(), "nodename": "web-1"},
        tenant=tenant,
    )
    return answer.status, answer.body


def test_join_exchanges_token_for_host_certificate(platform: Platform) -> None:
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin)
    assert token.status == 201
    status, body = _join(platform, token.body["token"])
    assert status == 200, body
    cert = load_ssh_public_identity(body["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    assert cert.type is SSHCertificateType.HOST
    host_id = body["host_id"]
    assert cert.valid_principals == [
        host_id.encode(),
        f"{host_id}.acme".encode(),
        b"web-1",
        b"web-1.acme.localhost",
        f"{host_id}.acme.localhost".encode(),
    ]
    assert body["ca"]["ca_pin"] == token.body["ca_pin"]
    assert certs.openssh_public(cert.signature_key()) == body["ca"]["host_ca_keys"][0]


def test_expired_join_token_is_refused_with_how_long_ago(platform: Platform) -> None:
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body["token"]
    platform.clock.advance(timedelta(minutes=8))
    status, body = _join(platform, token)
    assert status == 403
    assert (
        body["detail"] == "join token expired 3m ago: ask an admin for a new one: jumpctl nodes add"
    )


def test_deleted_join_token_is_refused_as_deleted(platform: Platform) -> None:
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {}, session=admin).body["token"]
    assert platform.call("DELETE", f"/v1/tokens/{token}", session=admin).status == 204
    listed = platform.call("GET", "/v1/tokens", session=admin).body["tokens"]
    assert token not in [t["token"] for t in listed]
    platform.clock.advance(timedelta(minutes=2))
    status, body = _join(platform, token)
    assert status == 403
    assert (
        body["detail"]
        == "join token was deleted 2m ago: ask an admin for a new one: jumpctl nodes add"
    )
    again = platform.call("DELETE", f"/v1/tokens/{token}", session=admin)
    assert again.status == 404


def test_unknown_and_wrong_role_tokens_are_refused(platform: Platform) -> None:
    platform.admin_session()
    status, body = _join(platform, "never-issued-token-value")
    assert status == 403
    assert (
        body["detail"] == "join token not recognised: ask an admin for a new one: jumpctl nodes add"
    )
    status, body = _join(platform, STATIC_PROXY_TOKEN)
    assert status == 403
    assert body["detail"] == (
        "join token is for system role(s) proxy, not node: "
        "issue one with jumpctl tokens add --type=node"
    )


def test_non_ascii_tokens_are_refused_not_crashed_on(platform: Platform) -> None:
    """Found by schemathesis: comparing a non-ASCII str with compare_digest raised (a 500)."""
    alice = platform.admin_session()
    deleted = platform.call("DELETE", "/v1/tokens/%C3%97%F3%B8%A1", session=alice)
    assert deleted.status == 404, deleted.body
    status, body = _join(platform, "jöin-tökén-välüe-ünknöwn")
    assert status == 400, body


def test_tokens_ls_shows_dynamic_and_static_tokens(platform: Platform) -> None:
    admin = platform.admin_session()
    made = platform.call(
        "POST",
        "/v1/tokens",
        {"token": "my-chosen-token-value-1", "ttl_seconds": 600},
        session=admin,
    )
    assert made.status == 201
    tokens = platform.call("GET", "/v1/tokens", session=admin).body["tokens"]
    assert [(t["token"], t["static"]) for t in tokens] == [
        ("my-chosen-token-value-1", False),
        (STATIC_PROXY_TOKEN, True),
    ]
    refused = platform.call("DELETE", f"/v1/tokens/{STATIC_PROXY_TOKEN}", session=admin)
    assert refused.status == 400
    assert refused.detail == "static tokens come from the config file: remove it there"
    dup = platform.call("POST", "/v1/tokens", {"token": "my-chosen-token-value-1"}, session=admin)
    assert dup.status == 409


def test_users_add_ls_rm(platform: Platform) -> None:
    admin = platform.admin_session()
    added = platform.call(
        "POST",
        "/v1/users",
        {"name": "bob", "logins": ["ubuntu"], "roles": ["access"]},
        session=admin,
    )
    assert added.status == 201
    assert added.body["user"] == "bob"
    users = platform.call("GET", "/v1/users", session=admin).body["users"]
    assert [(u["name"], u["status"]) for u in users] == [("alice", "active"), ("bob", "invited")]
    dup = platform.call("POST", "/v1/users", {"name": "bob"}, session=admin)
    assert dup.status == 409
    assert dup.detail == "user 'bob' exists already: see jumpctl users ls"
    assert platform.call("DELETE", "/v1/users/bob", session=admin).status == 204
    gone = platform.call(
        "POST", "/v1/signup", {"token": added.body["invite_token"], "password": "x" * 12}
    )
    assert gone.status == 403
    assert platform.call("DELETE", "/v1/users/bob", session=admin).status == 404
    self_rm = platform.call("DELETE", "/v1/users/alice", session=admin)
    assert self_rm.detail == "you cannot remove yourself: ask another admin"


def test_access_user_is_refused_admin_routes(platform: Platform) -> None:
    admin = platform.admin_session()
    invite = platform.call("POST", "/v1/users", {"name": "bob", "logins": ["bob"]}, session=admin)
    bob = platform.signup("acme", invite.body["invite_token"], "bob")
    platform.next_code()
    assert platform.login(bob).status == 200
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    for method, path, needed in [
        ("GET", "/v1/users", "list user"),
        ("POST", "/v1/tokens", "create token"),
        ("GET", "/v1/tokens", "list token"),
    ]:
        answer = platform.call(method, path, {} if method == "POST" else None, session=bob)
        assert answer.status == 403, path
        assert answer.detail == f"user 'bob' may not {needed}: ask a tenant admin"


def test_removed_user_is_refused_on_next_request(platform: Platform) -> None:
    admin = platform.admin_session()
    invite = platform.call("POST", "/v1/users", {"name": "bob", "logins": ["bob"]}, session=admin)
    bob = platform.signup("acme", invite.body["invite_token"], "bob")
    platform.next_code()
    platform.login(bob)
    assert platform.call("GET", "/v1/status", session=bob).status == 200
    platform.call("DELETE", "/v1/users/bob", session=admin)
    answer = platform.call("GET", "/v1/status", session=bob)
    assert answer.status == 401
    assert answer.detail == "user 'bob' no longer exists: ask a tenant admin"


def test_expired_certificate_is_refused(platform: Platform) -> None:
    admin = platform.admin_session()
    platform.clock.advance(timedelta(hours=12, minutes=5))
    answer = platform.call("GET", "/v1/status", session=admin)
    assert answer.status == 401
    assert answer.problem_type == "certificate-expired"
    assert answer.detail == "certificate expired 5m ago: run jump login"


def test_other_tenants_credentials_are_refused_and_disclose_nothing(platform: Platform) -> None:
    acme = platform.admin_session("acme", "alice")
    platform.call("POST", "/v1/users", {"name": "secret-bob"}, session=acme)
    globex = platform.admin_session("globex", "gadmin")
    for method, path in [
        ("GET", "/v1/users"),
        ("GET", "/v1/tokens"),
        ("GET", "/v1/status"),
        ("POST", "/v1/tokens"),
        ("POST", "/v1/users"),
        ("DELETE", "/v1/users/alice"),
        ("DELETE", "/v1/tokens/whatever-token-value"),
    ]:
        body = (
            {"name": "eve"}
            if path == "/v1/users" and method == "POST"
            else ({} if method == "POST" else None)
        )
        answer = platform.call(method, path, body, tenant="acme", session=globex)
        assert answer.status == 401, (method, path)
        assert (
            answer.detail == "certificate was not issued by this cluster: run jump login against it"
        )
        text = json.dumps(answer.body)
        assert "alice" not in text
        assert "secret-bob" not in text
    assert platform.plane.users.get("acme", "alice")[0].name == "alice"


def test_forged_tenant_extension_is_refused(platform: Platform) -> None:
    """A certificate signed by tenant A's CA but sent to A while naming B stays refused."""
    acme = platform.admin_session("acme", "alice")
    platform.admin_session("globex", "gadmin")
    answer = platform.call("GET", "/v1/users", tenant="globex", session=acme)
    assert answer.status == 401


def test_tampered_or_replayed_signed_request_is_refused(platform: Platform) -> None:
    admin = platform.admin_session()
    stolen = Session("acme", "alice", admin.totp, certificate=admin.certificate)  # other key
    answer = platform.call("GET", "/v1/users", session=stolen)
    assert answer.status == 401
    assert answer.detail == "request signature does not verify: run jump login"
    # Replay: the same nonce twice on a state-changing route.
    first = platform.call("POST", "/v1/tokens", {}, session=admin, nonce="fixed-nonce-value-1234")
    second = platform.call("POST", "/v1/tokens", {}, session=admin, nonce="fixed-nonce-value-1234")
    assert first.status == 201
    assert second.status == 401
    assert second.detail == "request was replayed: send a new request"


def test_unauthenticated_request_says_how_to_log_in(platform: Platform) -> None:
    platform.admin_session()
    answer = platform.call("GET", "/v1/users")
    assert answer.status == 401
    assert answer.detail == "not logged in: run jump login --proxy=<tenant address>"


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "problem"),
    [
        (b'{"user": "alice", ', "application/json", 400, "malformed-json"),
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", 413, "body-too-large"),
        (b"user=alice", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b'{"user": "alice", "extra": 1}', "application/json", 400, "invalid-request"),
        (b"[1, 2]", "application/json", 400, "invalid-request"),
    ],
    ids=["malformed-json", "oversized", "form-encoded", "unknown-field", "not-an-object"],
)
def test_bad_bodies_get_problem_json(
    platform: Platform, raw: bytes, content_type: str, status: int, problem: str
) -> None:
    platform.admin_session()
    answer = platform.call("POST", "/v1/login", raw=raw, content_type=content_type)
    assert answer.status == status
    assert answer.problem_type == problem
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.detail


@pytest.mark.parametrize("path", ["/v1/login", "/v1/signup", "/v1/join", "/v1/trust"])
def test_a_deeply_nested_body_is_malformed_json(platform: Platform, path: str) -> None:
    """Finding 10: ``RecursionError`` is not a ``ValueError``: it escaped the handler (500 or
    502 with a traceback) instead of the 400 any other bad JSON gets."""
    platform.admin_session()
    deep = b"[" * 30000 + b"]" * 30000
    answer = platform.call("POST", path, raw=deep)
    assert (answer.status, answer.problem_type) == (400, "malformed-json")
    assert answer.detail == "request body is not valid JSON"


@pytest.mark.parametrize("path", ["/v1/login", "/v1/signup", "/v1/join"])
def test_nesting_that_json_takes_but_the_model_does_not_is_a_bad_request(
    platform: Platform, path: str
) -> None:
    """900 levels parse as JSON; the request model refuses them as any body that does not
    fit, never with a 500."""
    platform.admin_session()
    nested = b'{"user": ' + b"[" * 900 + b"]" * 900 + b"}"
    answer = platform.call("POST", path, raw=nested)
    assert answer.status == 400, answer
    assert answer.detail


@pytest.mark.parametrize(
    "host",
    ["Not_A_Label.localhost:3080", "localhost:3080", "acme.example.org", "nosuch.localhost"],
    ids=["not-dns-label", "bare-public-addr", "outside-public-addr", "unknown-tenant"],
)
def test_unaddressed_or_unknown_tenant(platform: Platform, host: str) -> None:
    platform.admin_session()
    answer = platform.call("GET", "/v1/ca", host=host)
    assert answer.status == 404
    assert answer.problem_type == "unknown-tenant"


def test_store_dump_shows_no_secret_in_clear(platform: Platform) -> None:
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {}, session=admin).body["token"]
    store = platform.plane.store
    assert isinstance(store, SQLiteStore | DynamoDBStore)
    dump = b"\n".join(value for _, _, value in store.dump())
    assert b"PRIVATE KEY" not in dump
    assert admin.totp.secret.encode() not in dump
    assert token.encode() not in dump
    for kind in ("user", "host"):
        ca = platform.plane.authorities.get("acme", kind)
        raw = ca.private_key.private_bytes_raw()  # type: ignore[union-attr]
        assert raw not in dump
        assert raw.hex().encode() not in dump


def test_ping_and_openapi(platform: Platform) -> None:
    platform.admin_session()
    ping = platform.call("GET", "/webapi/ping")
    assert ping.status == 200
    assert ping.body["cluster_name"] == "acme"
    assert ping.body["ssh_public_addr"] == "acme.localhost:3023"
    doc = platform.call("GET", "/v1/openapi.json")
    assert doc.status == 200
    assert {"/v1/login", "/v1/join", "/v1/users", "/v1/tokens/{token}"} <= set(doc.body["paths"])


@pytest.mark.parametrize(
    ("path", "field"),
    [("/v1/login", "public_key"), ("/v1/join", "public_key")],
    ids=["login", "join"],
)
def test_unparseable_public_key_is_a_clear_400(platform: Platform, path: str, field: str) -> None:
    admin = platform.admin_session()
    platform.next_code()
    token = platform.call("POST", "/v1/tokens", {}, session=admin).body["token"]
    bodies = {
        "/v1/login": {"user": "alice", "password": "x", "otp": platform.otp(admin)},
        "/v1/join": {"token": token, "nodename": "web-1"},
    }
    answer = platform.call("POST", path, {**bodies[path], field: "not-a-key AAAAAAAAAAAAAAAA"})
    assert answer.status == 400
    assert answer.detail == "not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')"


def test_invite_and_join_tokens_never_look_like_flags(platform: Platform) -> None:
    """A token is typed as a command-line argument: it must never start with '-'."""
    admin = platform.admin_session()
    for n in range(40):
        invite = platform.call("POST", "/v1/users", {"name": f"user{n}"}, session=admin)
        join = platform.call("POST", "/v1/tokens", {}, session=admin)
        assert invite.body["invite_token"][0].isalnum()
        assert join.body["token"][0].isalnum()


def test_failed_tenant_create_leaves_nothing_behind(platform: Platform) -> None:
    with pytest.raises(ValueError, match="user name 'Bad Name' is not valid"):
        platform.plane.tenants.create("acme", admin="Bad Name", logins=[])
    assert platform.plane.tenants.list() == []
    assert platform.plane.store.list_all("acme", "") == []
    created = platform.plane.tenants.create("acme", admin="alice", logins=["root"])
    assert created.tenant == "acme"

"""The audit log through the API: what lands in it, who may search it, and bad searches."""

import json
import urllib.parse
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jumpgate.control_plane.audit.base import Auditor, open_sink
from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.clock import ManualClock
from jumpgate.protocol import certs
from jumpgate.protocol.audit import EventType
from tests.functional.conftest import PASSWORD, Platform, Session


def _search(platform: Platform, session: Session, **params: Any) -> Any:
    pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
    return platform.call(
        "GET",
        "/v1/audit/events",
        session=session,
        tenant=session.tenant,
        query=urllib.parse.urlencode(pairs),
    )


def _events(platform: Platform, session: Session, **params: Any) -> list[dict[str, Any]]:
    answer = _search(platform, session, **params)
    assert answer.status == 200, answer.body
    assert answer.body["cursor"] is None
    return list(answer.body["events"])


def test_tenant_creation_and_logins_are_recorded(platform: Platform) -> None:
    admin = platform.admin_session()
    events = _events(platform, admin, order="asc")
    assert [(e["type"], e["code"]) for e in events] == [
        ("tenant.create", "J9100I"),
        ("user.create", "J1002I"),
        ("user.signup", "J1009I"),
        ("user.login", "J1000I"),
    ]
    signup = events[2]
    assert (signup["user"], signup["remote_addr"], signup["success"]) == (
        "alice",
        "127.0.0.1",
        True,
    )
    login = events[-1]
    assert login["tenant"] == "acme"
    assert login["user"] == "alice"
    assert login["method"] == "password+totp"
    assert login["remote_addr"] == "127.0.0.1"
    assert login["success"] is True


def test_failed_logins_joins_and_admin_actions_are_recorded(platform: Platform) -> None:
    admin = platform.admin_session()
    key = certs.openssh_public(admin.key.public_key())
    body = {"user": "alice", "password": PASSWORD + "x", "otp": "000000", "public_key": key}
    assert platform.call("POST", "/v1/login", body).status == 401
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body["token"]
    joined = platform.call(
        "POST", "/v1/join", {"token": token, "public_key": key, "nodename": "web-1"}
    )
    assert joined.status == 200
    bogus = {"token": "0" * 32, "public_key": key, "nodename": "x"}
    assert platform.call("POST", "/v1/join", bogus).status == 403
    invite = platform.call("POST", "/v1/users", {"name": "bob"}, session=admin).body
    guessed = {"token": "0" * 32, "password": PASSWORD}
    assert platform.call("POST", "/v1/signup", guessed, tenant="acme").status == 403
    platform.call("PUT", "/v1/users/bob/lock", {"message": "gone"}, session=admin)
    platform.call("DELETE", "/v1/users/bob", session=admin)
    events = _events(platform, admin, order="asc")[4:]
    assert [(e["type"], e["code"]) for e in events] == [
        ("user.login", "J1000W"),
        ("token.create", "J9001I"),
        ("join", "J9000I"),
        ("join", "J9000W"),
        ("user.create", "J1002I"),
        ("user.signup", "J1009W"),
        ("user.lock", "J1006I"),
        ("lock.created", "J9013I"),  # the user lock is a lock resource
        ("user.delete", "J1004I"),
        ("lock.created", "J9013I"),  # ends whatever the removed user has open
    ]
    failed, created, join, refused = events[:4]
    bad_signup = events[5]
    assert bad_signup["success"] is False
    assert bad_signup["error"].startswith("invite token not recognised")
    assert invite["invite_token"] not in str(events)
    assert failed["success"] is False
    assert failed["error"] == "login failed: wrong user name, password or one-time code"
    assert created["token_id"] == join["token_id"] != refused["token_id"]
    assert join["server_id"] == joined.body["host_id"]
    assert refused["error"].startswith("join token not recognised")
    assert all(token not in str(e) for e in events)  # never the secret itself
    deleted = events[-2]
    assert deleted["user"] == "alice"
    assert deleted["name"] == "bob"
    user_lock, removal_lock = events[-3], events[-1]
    assert (user_lock["user"], user_lock["target_user"], user_lock["message"]) == (
        "alice",
        "bob",
        "gone",
    )
    assert (removal_lock["user"], removal_lock["target_user"]) == ("alice", "bob")
    assert removal_lock["target_user_id"]
    assert removal_lock["message"] == "user 'bob' was removed"


def test_search_filters_pages_and_time_range(platform: Platform) -> None:
    admin = platform.admin_session()
    for _ in range(5):
        platform.next_code()
        assert platform.login(admin).status == 200
    logins = _events(platform, admin, type="user.login")
    assert len(logins) == 6
    times = [e["time"] for e in logins]
    assert times == sorted(times, reverse=True)
    both = _events(platform, admin, type=["user.login", "tenant.create"], user="alice")
    assert len(both) == 6  # tenant.create was the operator's, not alice's
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = _search(platform, admin, **params).body
        seen += [e["id"] for e in page["events"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 9  # tenant, user, signup, 6 logins
    start = logins[-1]["time"]  # the first login, with the tenant's creation
    first_second = {
        "from": start,
        "to": (platform.clock.now() - timedelta(seconds=149)).isoformat(),
    }
    assert [e["type"] for e in _events(platform, admin, **first_second)] == [
        "user.login",
        "user.signup",
        "user.create",
        "tenant.create",
    ]
    soon = platform.clock.now() + timedelta(hours=1)
    window = {"from": soon.isoformat(), "to": (soon + timedelta(hours=1)).isoformat()}
    assert _events(platform, admin, **window) == []


def test_only_a_tenants_admins_search_its_log(platform: Platform) -> None:
    admin = platform.admin_session()
    globex = platform.admin_session("globex", "gadmin")
    assert {e["tenant"] for e in _events(platform, globex)} == {"globex"}
    assert {e["tenant"] for e in _events(platform, admin)} == {"acme"}
    invite = platform.call("POST", "/v1/users", {"name": "bob", "logins": ["bob"]}, session=admin)
    bob = platform.signup("acme", invite.body["invite_token"], "bob")
    platform.next_code()
    platform.login(bob)
    refused = _search(platform, bob)
    assert refused.status == 403
    assert refused.detail == "user 'bob' may not list event: ask a tenant admin"
    cross = platform.call("GET", "/v1/audit/events", session=globex, tenant="acme")
    assert cross.status == 401


def test_bad_searches_get_one_line_each(platform: Platform) -> None:
    admin = platform.admin_session()
    now = platform.clock.now()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}, "--from must"),
        ({"type": "session.explode"}, "unknown event type 'session.explode'"),
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor is not one this search returned"),
        ({"order": "sideways"}, "order"),
        ({"from": "yesterday"}, "from"),
    ]
    for params, expected in cases:
        answer = _search(platform, admin, **params)
        assert answer.status == 400, (params, answer.body)
        assert expected in answer.detail, (params, answer.detail)
        assert "\n" not in answer.detail


def test_file_sink_gets_every_event_as_a_json_line(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SQLiteAuditStore(tmp_path / "audit.db", clock=clock)
    path = tmp_path / "logs" / "events.log"
    auditor = Auditor(store, clock, sinks=[open_sink(f"file://{path}")])
    auditor.emit(EventType.USER_LOGIN, "acme", user="alice", method="password+totp")
    auditor.emit(EventType.USER_LOGIN, "acme", outcome="W", user="bob", error="nope")
    auditor.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["user"], e["code"], e["success"]) for e in lines] == [
        ("alice", "J1000I", True),
        ("bob", "J1000W", False),
    ]
    assert lines[0]["method"] == "password+totp"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match="not file:///ABSOLUTE/PATH or stdout://"):
        open_sink("s3://bucket/events")


def _internal_audit(platform: Platform, events: list[dict[str, Any]]) -> dict[str, Any]:
    return platform.internal("/internal/v1/audit", {"events": events})


def test_proxies_record_session_events_for_the_tenant_they_name(platform: Platform) -> None:
    admin = platform.admin_session()
    when = platform.clock.now().isoformat()
    start = {
        "type": "session.start",
        "tenant": "acme",
        "time": when,
        "fields": {"user": "alice", "login": "root", "session_id": "s-1", "server_id": "n-1"},
    }
    assert _internal_audit(platform, [start])["statusCode"] == 204
    [event] = _events(platform, admin, type="session.start")
    assert (event["session_id"], event["login"], event["code"]) == ("s-1", "root", "J2000I")
    bad_tenant = {**start, "tenant": "Not A Tenant"}
    answer = _internal_audit(platform, [bad_tenant])
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["detail"].startswith("events[0].tenant: tenant name")
    for fields in ({"success": True}, {"login": ["not", "a", "string"]}):
        assert _internal_audit(platform, [{**start, "fields": fields}])["statusCode"] == 400
    assert len(_events(platform, admin, type="session.start")) == 1

"""The proxy's internal routes refuse a malformed tenant as a bad request (400, naming the
tenant), before any store key is built from it: never an internal error. The proxy's audit
outbox over the real route: an event refused for good is replaced and delivery goes on; events
of tenants that do not exist are not stored."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncssh
import pytest

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.handlers.internal import build_internal_app, make_internal_handler
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.lambda_invoke import ControlPlaneUnavailable
from jumpgate.edge_proxy.proxy_audit import AuditOutbox
from jumpgate.edge_proxy.service import ProxyService
from jumpgate.protocol import models
from jumpgate.protocol.audit import EventType
from tests.functional.conftest import Platform


def _routes_taking_a_tenant() -> list[str]:
    """The internal routes whose request body has a ``tenant``, read off the OpenAPI document."""
    app = build_internal_app(None)  # type: ignore[arg-type]  # routes are not called here
    document: dict[str, Any] = json.loads(app.get_openapi_json_schema())
    models = document["components"]["schemas"]
    routes = []
    for path, item in document["paths"].items():
        body = item.get("post", {}).get("requestBody")
        if body is None:
            continue
        schema = body["content"]["application/json"]["schema"]
        # an optional body (a proxy of an earlier release sends none) is anyOf [it, null]
        ref = schema.get("$ref") or next(s["$ref"] for s in schema["anyOf"] if "$ref" in s)
        name = ref.rsplit("/", 1)[-1]
        if "tenant" in models[name].get("properties", {}):
            routes.append(path)
    return routes


ROUTES = _routes_taking_a_tenant()


def test_every_route_that_takes_a_tenant_is_covered() -> None:
    assert len(ROUTES) >= 10, ROUTES  # the walk above found them; it did not silently skip


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("tenant", ["../acme", "a" * 64])
def test_a_malformed_tenant_is_a_bad_request(platform: Platform, path: str, tenant: str) -> None:
    body: dict[str, Any] = {"tenant": tenant}
    if path == "/internal/v1/audit":
        body = {
            "events": [{"type": "session.start", "tenant": tenant, "time": "2026-01-01T00:00:00Z"}]
        }
    answer = platform.internal(path, body)
    assert answer["statusCode"] == 400, answer
    assert "tenant" in json.loads(answer["body"])["detail"]


def test_the_proxy_refuses_a_body_it_cannot_send_as_the_platform_would(
    platform: Platform,
) -> None:
    """What users and nodes hand the proxy (a typed node name, a tunnel's user name) becomes a
    400 naming the field, before any call: never a validation traceback in the proxy."""
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    control = ControlPlaneClient(invoke)
    platform.invite("acme", "alice")
    for call, field in (
        (control.locate("acme", "n" * 301), "name"),
        (control.locate("acme", ""), "name"),
        (control.tunnel_auth("Not_A_Cluster", "h", "ssh-ed25519 " + "A" * 68), "tenant"),
    ):
        with pytest.raises(ControlPlaneError) as refused:
            asyncio.run(call)
        assert refused.value.status == 400
        assert str(refused.value).startswith(f"{field}: ")
    with pytest.raises(ControlPlaneError) as unknown:  # a well-formed name goes to the platform
        asyncio.run(control.locate("acme", "web-1"))
    assert unknown.value.status == 404


def _fronts(platform: Platform) -> ProxyService:
    """The proxy's SSH service (not listening) whose control-plane client calls ``platform``'s
    internal handler in-process, as the ``jumpgate start`` daemon wires it."""
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    return ProxyService(
        ControlPlaneClient(invoke),
        proxy_id="proxy-1",
        host_key=asyncssh.generate_private_key("ssh-ed25519"),
        public_addr="localhost",
    )


def _search(platform: Platform, tenant: str, *types: str) -> list[dict[str, Any]]:
    """Events stamped by the proxy (the real clock) or by the route (the platform's)."""
    times = (platform.clock.now(), datetime.now(UTC))
    since, until = min(times) - timedelta(hours=1), max(times) + timedelta(hours=1)
    query = Query(tenant, since, until, frozenset(types))
    return [e.model_dump() for e in platform.plane.audit.search(query).events]


def test_an_event_the_platform_refuses_is_replaced_and_the_proxys_audit_goes_on(
    platform: Platform,
) -> None:
    """Issue 14 round 2, finding 1: one event the control plane could not store held up the
    proxy's outbox for good. Now it is replaced by ``audit.dropped`` saying why, and the
    events before and after it are stored once each."""
    platform.invite("acme", "alice")
    fronts = _fronts(platform)
    fronts.audit.record(EventType.SESSION_START, "acme", "I", session_id="s-1", user="alice")
    fronts.audit.events.put(  # a name no store takes, as it reached the outbox before cleaning
        models.AuditRecord(
            type=EventType.USER_LOGIN_LIMITED,
            tenant="acme",
            outcome="W",
            time=datetime.now(UTC),
            fields={"user": "\ud800poison", "event_id": "0" * 32},
        )
    )
    fronts.audit.record(EventType.SESSION_END, "acme", "I", session_id="s-1", user="alice")
    fronts.audit.record(EventType.SESSION_START, "acme", "I", session_id="s-2", id="set-by-the-log")
    fronts.audit.record(EventType.SESSION_END, "acme", "I", session_id="s-2", user="alice")
    assert asyncio.run(asyncio.wait_for(fronts.audit.flush(), 10))
    assert (len(fronts.audit.events), fronts.audit.events.refused) == (0, 2)
    stored = _search(platform, "acme", "session.start", "session.end", "audit.dropped")
    assert sorted((e["type"], e["session_id"]) for e in stored) == [
        ("audit.dropped", ""),
        ("audit.dropped", "s-2"),
        ("session.end", "s-1"),
        ("session.end", "s-2"),
        ("session.start", "s-1"),
    ]
    dropped = [e for e in stored if e["type"] == "audit.dropped"]
    assert {e["code"] for e in dropped} == {"J9005W"}
    assert {e["dropped_type"] for e in dropped} == {"user.login.limited", "session.start"}
    assert {e["origin"] for e in dropped} == {"proxy"}
    reasons = " ".join(e["error"] for e in dropped)
    assert "surrogates not allowed" in reasons, reasons
    assert "set by the audit log itself" in reasons, reasons
    assert all("\ud800" not in e["error"] for e in dropped)


def test_a_platform_out_of_reach_keeps_the_proxys_events_for_later(platform: Platform) -> None:
    async def unreachable(event: dict[str, Any]) -> dict[str, Any]:
        raise ControlPlaneUnavailable("jumpgate-internal failed (Unhandled)")

    audit = AuditOutbox(ControlPlaneClient(unreachable))  # the proxy's, as _fronts makes it
    audit.record(EventType.SESSION_START, "acme", "I", session_id="s-1")
    assert not asyncio.run(asyncio.wait_for(audit.flush(), 10))
    assert (len(audit.events), audit.events.refused) == (1, 0)


def test_the_proxy_records_what_users_send_as_text_every_store_takes(
    platform: Platform,
) -> None:
    """A name from a request (JSON's ``\\ud800`` is no text UTF-8 encodes) is kept escaped,
    and bounded, instead of refused."""
    platform.invite("acme", "alice")
    fronts = _fronts(platform)
    fronts.audit.record(EventType.AUTH, "acme", "W", user="\ud800poison", login="x" * 100_000)
    assert asyncio.run(asyncio.wait_for(fronts.audit.flush(), 10))
    assert fronts.audit.events.refused == 0
    [event] = _search(platform, "acme", "auth")
    assert event["user"] == "\\ud800poison"
    assert 0 < len(event["login"]) <= 1024


def test_events_for_a_tenant_that_does_not_exist_are_not_stored(platform: Platform) -> None:
    """Issue 14 round 2, finding 11: an unauthenticated login to a made-up tenant left one
    ``user.login.limited`` row per new name. The internal route now keeps only events of
    tenants that exist, and answers 204 (the proxy has nothing to send again)."""
    platform.invite("acme", "alice")
    when = platform.clock.now().isoformat()
    events = [
        {"type": "user.login.limited", "tenant": tenant, "time": when, "outcome": "W"}
        for tenant in ("acme", "ghost", "t0123456789ab")
    ]
    answer = platform.internal("/internal/v1/audit", {"events": events})
    assert answer["statusCode"] == 204, answer
    assert len(_search(platform, "acme", "user.login.limited")) == 1
    for tenant in ("ghost", "t0123456789ab"):
        assert _search(platform, tenant) == []

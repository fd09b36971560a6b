"""The proxy's internal routes refuse a malformed tenant as a bad request (400, naming the
tenant), before any store key is built from it: never an internal error."""

import asyncio
import json
from typing import Any

import pytest

from jumpgate.control_plane.handlers.internal import build_internal_app, make_internal_handler
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
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
        name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
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

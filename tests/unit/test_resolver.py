"""ConcurrentResolver: two requests resolved at once each see their own event and route."""

import threading
from typing import Any, cast

import pytest

from jumpgate.control_plane.handlers.resolver import ConcurrentResolver
from jumpgate.edge_proxy.events import http_event


def _overlapping(app: ConcurrentResolver) -> dict[str, list[str]]:
    """Resolve /v1/a and /v1/b at once; each route reads its event, waits until the other is
    inside its own route too, then reads again. (Powertools' own resolver, as the lock of
    decision 0010 was there for, gives both the last event set, or fails on a routing
    context the other request cleared.)"""
    inside = threading.Barrier(2, timeout=10)
    seen: dict[str, list[str]] = {}

    @app.get("/v1/<name>")
    def route(name: str) -> dict[str, Any]:
        before = app.current_event.raw_path
        inside.wait()
        seen[name] = [before, app.current_event.raw_path, app.context["_route_args"]["name"]]
        return {"name": name}

    app.prepare()

    def call(name: str) -> None:
        event = http_event(
            method="GET", path=f"/v1/{name}", query="", headers={}, body=b"", source_ip=""
        )
        app.resolve(event, cast(Any, None))  # no Lambda context in the daemon

    threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    return seen


def test_each_request_keeps_its_own_event_and_route_arguments() -> None:
    seen = _overlapping(ConcurrentResolver(enable_validation=True))
    assert seen == {"a": ["/v1/a", "/v1/a", "a"], "b": ["/v1/b", "/v1/b", "b"]}


def test_prepare_builds_every_routes_middleware_stack() -> None:
    app = ConcurrentResolver(enable_validation=True)

    @app.get("/x")
    def x() -> dict[str, Any]:
        return {}

    @app.post("/y/<name>")
    def y(name: str) -> dict[str, Any]:
        return {}

    routes = app._static_routes + app._dynamic_routes
    assert not any(route._middleware_stack_built for route in routes)
    app.prepare()
    assert all(route._middleware_stack_built for route in routes)


def test_current_event_outside_a_request_says_so() -> None:
    with pytest.raises(RuntimeError, match="only set while a request is resolved"):
        _ = ConcurrentResolver().current_event

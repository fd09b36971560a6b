"""Every route the handlers serve is one of ``protocol.routes``, and every one of those is
served: the OpenAPI documents (public and internal) are compared with the route table."""

import json

from jumpgate.control_plane.handlers.api import build_app
from jumpgate.control_plane.handlers.internal import build_internal_app
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.protocol import routes
from tests.functional.conftest import Platform


def _served(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(method.upper(), path) for path, methods in paths.items() for method in methods}


def test_the_public_api_serves_exactly_the_public_routes(platform: Platform) -> None:
    document = platform.call(routes.OPENAPI.method, routes.OPENAPI.path)
    assert document.status == 200  # the one route the document leaves out of itself
    declared = {(r.method, r.openapi_path) for r in routes.PUBLIC if r is not routes.OPENAPI}
    assert _served(document.body) == declared


def test_the_internal_api_serves_exactly_the_internal_routes(plane: ControlPlane) -> None:
    document = json.loads(build_internal_app(plane).get_openapi_json_schema())
    assert _served(document) == {(r.method, r.openapi_path) for r in routes.INTERNAL}


def test_the_public_api_serves_no_internal_route(plane: ControlPlane) -> None:
    document = json.loads(build_app(plane).get_openapi_json_schema())
    assert not {p for _, p in _served(document)} & {r.openapi_path for r in routes.INTERNAL}

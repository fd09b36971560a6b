"""The proxy answers an unsigned call to an authenticated route 401 itself (decision 0018,
review round 2, finding 7): its list of open routes must be the control plane's."""

import re

from jumpgate.edge_proxy.limits import OPEN_PATHS
from tests.functional.conftest import Platform


def test_the_proxys_open_routes_are_the_ones_the_control_plane_serves_unsigned(
    platform: Platform,
) -> None:
    """Every route of the API outside ``OPEN_PATHS`` refuses an unsigned call (401, or 400
    for a request it rejects before reading who asks): the proxy's own 401 for those takes
    nothing away. Every open path is a route the control plane serves."""
    platform.invite("acme", "alice")
    document = platform.call("GET", "/v1/openapi.json")
    assert document.status == 200
    served = set(document.body["paths"]) | {"/v1/openapi.json"}
    assert not OPEN_PATHS - served, OPEN_PATHS - served
    answered: dict[str, int] = {}
    for path, methods in document.body["paths"].items():
        if path in OPEN_PATHS:
            continue
        concrete = re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", path)
        for method in methods:
            body: dict[str, str] | None = {} if method in ("post", "put", "patch") else None
            answered[f"{method.upper()} {path}"] = platform.call(
                method.upper(), concrete, body
            ).status
    assert len(answered) >= 15, answered
    served_unsigned = {route: status for route, status in answered.items() if status < 400}
    assert served_unsigned == {}, f"served without a signature: {served_unsigned}"
    assert set(answered.values()) <= {400, 401}, answered

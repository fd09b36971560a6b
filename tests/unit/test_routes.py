"""``protocol.routes``: a route fills its parameters in as one segment each, and says which
sent paths are its own (the function table picks a function by it)."""

import pytest

from jumpgate.protocol import routes
from jumpgate.protocol.functions import TABLE, Function, function_for
from jumpgate.protocol.routes import Route


def test_a_parameter_is_quoted_whole() -> None:
    assert routes.USER_LOCK.url(name="bob/lock") == "/v1/users/bob%2Flock/lock"
    assert routes.TOKEN_REMOVE.url(token="\u00d7\u00f3") == "/v1/tokens/%C3%97%C3%B3"
    assert routes.RECORDING_PART.url(session_id="s1", index=3) == "/v1/recordings/s1/parts/3"


@pytest.mark.parametrize(
    "values", [{}, {"name": "bob", "extra": "x"}, {"nam": "bob"}], ids=["none", "extra", "typo"]
)
def test_parameters_must_be_exactly_the_paths(values: dict[str, str]) -> None:
    with pytest.raises(TypeError, match="takes"):
        routes.USER_REMOVE.url(**values)


def test_the_openapi_form_braces_parameters() -> None:
    assert routes.RECORDING_PART.openapi_path == "/v1/recordings/{session_id}/parts/{index}"
    assert routes.RECORDING_PART.parameters == ("session_id", "index")


@pytest.mark.parametrize(
    ("route", "path", "matches"),
    [
        (routes.USER_LOCK, "/v1/users/bob/lock", True),
        (routes.USER_LOCK, "/v1/users/bob%2Fx/lock", True),
        (routes.USER_LOCK, "/v1/users/bob/x/lock", False),
        (routes.USER_LOCK, "/v1/users//lock", False),
        (routes.USERS, "/v1/users/", False),
        (routes.OPENAPI, "/v1/openapiXjson", False),
    ],
    ids=["plain", "encoded-slash", "two-segments", "empty", "trailing-slash", "dot-literal"],
)
def test_a_route_matches_its_own_paths_only(route: Route, path: str, matches: bool) -> None:
    assert route.matches(path) is matches


def test_every_route_is_defined_once() -> None:
    keys = [(r.method, r.path) for r in routes.ALL]
    assert len(keys) == len(set(keys))


def test_every_route_has_a_function_and_is_sent_to_it() -> None:
    assert set(TABLE) == set(routes.ALL)
    for route in routes.ALL:
        values = {name: "x1" for name in route.parameters}
        assert function_for(route.url(**values)) is TABLE[route], route


@pytest.mark.parametrize(
    ("path", "function"),
    [
        ("/v1/users/bob/lock", Function.RESOURCES),
        ("/v1/tokens/abc", Function.TOKENS),
        ("/v1/recordings/s1/parts/2", Function.AUDIT),
        ("/v1/settings/recording", Function.AUDIT),
        ("/internal/v1/unknown", Function.INTERNAL),
        ("/v1/unknown", Function.AUTH),
        ("/webapi/ping", Function.AUTH),
    ],
    ids=["lock", "token", "part", "settings", "internal-unknown", "unknown", "ping"],
)
def test_function_for_a_sent_path(path: str, function: Function) -> None:
    assert function_for(path) is function

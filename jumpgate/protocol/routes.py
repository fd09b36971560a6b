"""Every route of the platform's HTTP API, named once.

The control plane's handlers declare their routes with these paths, the function table
(``protocol.functions``) says which function serves each, and the clients build their URLs
from them: a path changed here changes everywhere, and a route nobody serves or nobody
declared shows in ``tests/unit/test_routes.py``.

A path is written the way the handlers' resolver reads it: ``<name>`` is a parameter, one
path segment. ``Route.url`` fills the parameters in, percent-encoded.
"""

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

Method = Literal["GET", "POST", "PUT", "DELETE"]

_PARAMETER = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class Route:
    """One method on one path."""

    method: Method
    path: str  # ``/v1/users/<name>``: ``<name>`` is one segment, filled in by ``url``

    @property
    def parameters(self) -> tuple[str, ...]:
        """The names of the path's parameters, in order."""
        return tuple(_PARAMETER.findall(self.path))

    @property
    def openapi_path(self) -> str:
        """The path as the OpenAPI document writes it: ``/v1/users/{name}``."""
        return _PARAMETER.sub(r"{\1}", self.path)

    def url(self, **values: str | int) -> str:
        """The path with every parameter filled in and percent-encoded (a ``/`` too)."""
        if set(values) != set(self.parameters):
            raise TypeError(f"{self.path} takes {self.parameters}, not {tuple(values)}")
        return _PARAMETER.sub(lambda m: _segment(str(values[m.group(1)])), self.path)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (as sent, still percent-encoded) is this route's."""
        pattern = "".join(
            "[^/]+" if i % 2 else re.escape(part)
            for i, part in enumerate(_PARAMETER.split(self.path))
        )
        return re.fullmatch(pattern, path) is not None


def _segment(value: str) -> str:
    """``value`` as one path segment: percent-encoded whole, and ``.``/``..`` with their
    dots encoded too, or the HTTP client removes them as dot segments (``/v1/users/../lock``
    is sent as ``/v1/lock``) and the call reaches another route."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return quote(value, safe="")


# The public API (``control_plane/handlers/api.py``)
PING = Route("GET", "/webapi/ping")
TRUST = Route("GET", "/v1/trust")
OPENAPI = Route("GET", "/v1/openapi.json")
CA = Route("GET", "/v1/ca")
SIGNUP = Route("POST", "/v1/signup")
LOGIN = Route("POST", "/v1/login")
JOIN = Route("POST", "/v1/join")
STATUS = Route("GET", "/v1/status")
NODES = Route("GET", "/v1/nodes")
NODE_REMOVE = Route("DELETE", "/v1/nodes/<name>")
USERS = Route("GET", "/v1/users")
USER_ADD = Route("POST", "/v1/users")
USER_REMOVE = Route("DELETE", "/v1/users/<name>")
USER = Route("GET", "/v1/users/<name>")
USER_UPDATE = Route("PUT", "/v1/users/<name>")
USER_LOCK = Route("PUT", "/v1/users/<name>/lock")
USER_UNLOCK = Route("DELETE", "/v1/users/<name>/lock")
TOKENS = Route("GET", "/v1/tokens")
TOKEN_ADD = Route("POST", "/v1/tokens")
TOKEN_REMOVE = Route("DELETE", "/v1/tokens/<token>")
AUDIT_EVENTS = Route("GET", "/v1/audit/events")
RECORDINGS = Route("GET", "/v1/recordings")
RECORDING = Route("GET", "/v1/recordings/<session_id>")
RECORDING_PART = Route("GET", "/v1/recordings/<session_id>/parts/<index>")
RECORDING_VERIFY = Route("POST", "/v1/recordings/<session_id>/verify")
RECORDING_SETTINGS = Route("GET", "/v1/settings/recording")
RECORDING_SETTINGS_SET = Route("PUT", "/v1/settings/recording")
ROLES = Route("GET", "/v1/roles")
ROLE = Route("GET", "/v1/roles/<name>")
ROLE_CREATE = Route("POST", "/v1/roles")
ROLE_PUT = Route("PUT", "/v1/roles/<name>")
ROLE_REMOVE = Route("DELETE", "/v1/roles/<name>")
LOCKS = Route("GET", "/v1/locks")
LOCK_ADD = Route("POST", "/v1/locks")
LOCK_REMOVE = Route("DELETE", "/v1/locks/<name>")

PUBLIC: tuple[Route, ...] = (
    PING,
    TRUST,
    OPENAPI,
    CA,
    SIGNUP,
    LOGIN,
    JOIN,
    STATUS,
    NODES,
    NODE_REMOVE,
    USERS,
    USER_ADD,
    USER_REMOVE,
    USER,
    USER_UPDATE,
    USER_LOCK,
    USER_UNLOCK,
    TOKENS,
    TOKEN_ADD,
    TOKEN_REMOVE,
    AUDIT_EVENTS,
    RECORDINGS,
    RECORDING,
    RECORDING_PART,
    RECORDING_VERIFY,
    RECORDING_SETTINGS,
    RECORDING_SETTINGS_SET,
    ROLES,
    ROLE,
    ROLE_CREATE,
    ROLE_PUT,
    ROLE_REMOVE,
    LOCKS,
    LOCK_ADD,
    LOCK_REMOVE,
)
"""Routes of the HTTPS front, in the order the handlers declare them."""

# The proxies' own calls (``control_plane/handlers/internal.py``), never on the public front
TENANT_BY_USER_CA = Route("POST", "/internal/v1/tenant-by-user-ca")
TUNNEL_AUTH = Route("POST", "/internal/v1/tunnel-auth")
SESSION_AUTH = Route("POST", "/internal/v1/session-auth")
AUDIT_INTAKE = Route("POST", "/internal/v1/audit")
RENEW_HOST_CERT = Route("POST", "/internal/v1/renew-host-cert")
NODE_TRUST = Route("POST", "/internal/v1/trust")
PRESENCE = Route("POST", "/internal/v1/presence")
NODE_REMOVALS = Route("POST", "/internal/v1/node-removals")
PROXY_ALIVE = Route("POST", "/internal/v1/proxy-alive")
PROXY_CERT = Route("POST", "/internal/v1/proxy-cert")
LOCATE = Route("POST", "/internal/v1/locate")
UPLOAD_SETTINGS = Route("POST", "/internal/v1/recordings/settings")
UPLOAD_OPEN = Route("POST", "/internal/v1/recordings/open")
UPLOAD_PART = Route("POST", "/internal/v1/recordings/part")
UPLOAD_ALIVE = Route("POST", "/internal/v1/recordings/alive")
UPLOAD_COMPLETE = Route("POST", "/internal/v1/recordings/complete")
LOCK_FEED = Route("POST", "/internal/v1/locks")
ROLE_DEFINITIONS = Route("POST", "/internal/v1/roles")

INTERNAL: tuple[Route, ...] = (
    TENANT_BY_USER_CA,
    TUNNEL_AUTH,
    SESSION_AUTH,
    AUDIT_INTAKE,
    RENEW_HOST_CERT,
    NODE_TRUST,
    PRESENCE,
    NODE_REMOVALS,
    PROXY_ALIVE,
    PROXY_CERT,
    LOCATE,
    UPLOAD_SETTINGS,
    UPLOAD_OPEN,
    UPLOAD_PART,
    UPLOAD_ALIVE,
    UPLOAD_COMPLETE,
    LOCK_FEED,
    ROLE_DEFINITIONS,
)
"""Routes of the internal resolver: only proxies call them."""

INTERNAL_PREFIX = "/internal/"
"""Every internal route starts so; any path under it belongs to the internal function."""

ALL: tuple[Route, ...] = PUBLIC + INTERNAL

"""Which control-plane function serves which route.

On AWS the control plane is several Lambda functions, each with only the permissions its
routes need; the proxy picks the function from the route and invokes it. Embedded, one
process serves every route. A function refuses routes that are not its own, so a wrong table
shows as a refusal, never as a route served with the wrong permissions.
"""

from enum import StrEnum

from jumpgate.protocol import routes
from jumpgate.protocol.routes import Route


class Function(StrEnum):
    AUTH = "auth"  # the CAs: signup, login and certificates, join; cluster status
    TOKENS = "tokens"  # join tokens
    RESOURCES = "resources"  # users, nodes, locks
    AUDIT = "audit"  # audit search, recordings and their settings
    INTERNAL = "internal"  # the proxy's own calls: tunnel and session checks, presence, uploads


TABLE: dict[Route, Function] = {
    **{route: Function.AUTH for route in routes.PUBLIC},
    **{route: Function.INTERNAL for route in routes.INTERNAL},
    routes.TOKENS: Function.TOKENS,
    routes.TOKEN_ADD: Function.TOKENS,
    routes.TOKEN_REMOVE: Function.TOKENS,
    routes.USERS: Function.RESOURCES,
    routes.USER_ADD: Function.RESOURCES,
    routes.USER_REMOVE: Function.RESOURCES,
    routes.USER: Function.RESOURCES,
    routes.USER_UPDATE: Function.RESOURCES,
    routes.USER_LOCK: Function.RESOURCES,
    routes.USER_UNLOCK: Function.RESOURCES,
    routes.NODES: Function.RESOURCES,
    routes.NODE_REMOVE: Function.RESOURCES,
    routes.ROLES: Function.RESOURCES,
    routes.ROLE: Function.RESOURCES,
    routes.ROLE_CREATE: Function.RESOURCES,
    routes.ROLE_PUT: Function.RESOURCES,
    routes.ROLE_REMOVE: Function.RESOURCES,
    routes.LOCKS: Function.RESOURCES,
    routes.LOCK_ADD: Function.RESOURCES,
    routes.LOCK_REMOVE: Function.RESOURCES,
    routes.AUDIT_EVENTS: Function.AUDIT,
    routes.RECORDINGS: Function.AUDIT,
    routes.RECORDING: Function.AUDIT,
    routes.RECORDING_PART: Function.AUDIT,
    routes.RECORDING_VERIFY: Function.AUDIT,
    routes.RECORDING_SETTINGS: Function.AUDIT,
    routes.RECORDING_SETTINGS_SET: Function.AUDIT,
}
"""Every route's function: the auth function's unless said otherwise (ping, the CAs, trust,
status, signup, login, join, the OpenAPI document)."""


def function_for(path: str) -> Function:
    """The function that serves ``path`` (as sent, any method). Any other path under
    ``/internal/`` is the internal function's and everything else the auth function's: each
    answers 404 for a path it does not serve."""
    if path.startswith(routes.INTERNAL_PREFIX):
        return Function.INTERNAL
    for route, function in TABLE.items():
        if route.matches(path):
            return function
    return Function.AUTH

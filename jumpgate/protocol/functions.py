"""Which control-plane function serves which route.

On AWS the control plane is several Lambda functions, each with only the permissions its
routes need; the proxy picks the function from the route and invokes it. Embedded, one
process serves every route. A function refuses routes that are not its own, so a wrong table
shows as a refusal, never as a route served with the wrong permissions.
"""

from enum import StrEnum


class Function(StrEnum):
    AUTH = "auth"  # the CAs: signup, login and certificates, join; cluster status
    TOKENS = "tokens"  # join tokens
    RESOURCES = "resources"  # users, nodes, locks
    AUDIT = "audit"  # audit search, recordings and their settings
    INTERNAL = "internal"  # the proxy's own calls: tunnel and session checks, presence, uploads


_PREFIXES: tuple[tuple[str, Function], ...] = (
    ("/internal/", Function.INTERNAL),
    ("/v1/tokens", Function.TOKENS),
    ("/v1/users", Function.RESOURCES),
    ("/v1/nodes", Function.RESOURCES),
    ("/v1/audit/", Function.AUDIT),
    ("/v1/recordings", Function.AUDIT),
    ("/v1/settings/recording", Function.AUDIT),
)


def function_for(path: str) -> Function:
    """The function that serves ``path`` (as sent); everything else is the auth function's:
    ``/webapi/ping``, ``/v1/ca``, ``/v1/trust``, ``/v1/status``, ``/v1/signup``, ``/v1/login``,
    ``/v1/join``, the OpenAPI document, and unknown paths (which it answers 404)."""
    for prefix, function in _PREFIXES:
        if path.startswith(prefix):
            return function
    return Function.AUTH

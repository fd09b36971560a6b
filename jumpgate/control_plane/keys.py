"""Every storage key of the control plane, built here and nowhere else.

Keys are relative to the tenant the store call names (``users/alice`` of tenant ``acme`` is
stored as ``/tenants/acme/users/alice``); ``tenant(name)`` lives in the platform scope.
Secrets that index records (invite and join tokens) are stored by their SHA-256, never in
the key itself.
"""

import hashlib
from typing import Literal


def digest(secret: str) -> str:
    """The hex SHA-256 a secret token is stored under."""
    return hashlib.sha256(secret.encode()).hexdigest()


def tenant(name: str) -> str:
    """A tenant's registry entry (platform scope)."""
    return f"tenants/{name}"


TENANTS = "tenants/"


def ca(kind: Literal["user", "host", "proxy"]) -> str:
    """A tenant's CA of one kind (the platform scope's ``proxy`` CA: proxy peering)."""
    return f"cas/{kind}"


def user(name: str) -> str:
    return f"users/{name}"


USERS = "users/"


def invite(token: str) -> str:
    return f"invites/{digest(token)}"


def join_token(token: str) -> str:
    return f"tokens/{digest(token)}"


TOKENS = "tokens/"


def node(host_id: str) -> str:
    return f"nodes/{host_id}"


NODES = "nodes/"


def nonce(value: str) -> str:
    """A signed request's nonce, kept while a replay of it could still be accepted."""
    return f"nonces/{value}"


def user_ca_index(public_key: str) -> str:
    """Platform-scope entry naming the tenant whose user CA this is (SSH sees no hostname)."""
    return f"user-cas/{digest(public_key.strip())}"


def node_removal(tenant: str, host_id: str) -> str:
    """A removed node's tombstone (platform scope): proxies still holding its tunnel close it."""
    return f"node-removals/{tenant}/{host_id}"


NODE_REMOVALS = "node-removals/"


def proxy(proxy_id: str) -> str:
    """A proxy's liveness (platform scope)."""
    return f"proxies/{proxy_id}"


RECORDING_KEY = "keys/recordings"
"""A tenant's Ed25519 key that signs recording manifests (sealed with the master key)."""
RECORDING_SETTINGS = "settings/recording"
"""A tenant's recording mode and whether exec sessions are recorded."""


def role(name: str) -> str:
    """A role a tenant wrote or changed (a preset not changed is not stored)."""
    return f"roles/{name}"


ROLES = "roles/"


def lock(tenant: str, lock_id: str) -> str:
    """A lock (platform scope, under its tenant): every proxy reads every lock in force with
    one listing, ``LOCKS``, to end the sessions they match (docs/decisions/0034)."""
    return f"locks/{tenant}/{lock_id}"


def tenant_locks(tenant: str) -> str:
    return f"locks/{tenant}/"


LOCKS = "locks/"


def role_revision(tenant: str) -> str:
    """A tenant's roles revision (platform scope), moved by every role write."""
    return f"role-revisions/{tenant}"


ROLE_REVISIONS = "role-revisions/"

POLICY_REVISION = "policy-revision"
"""The platform's policy revision (platform scope), moved by every lock and role written: a
proxy holding it reads nothing more (docs/decisions/0035)."""

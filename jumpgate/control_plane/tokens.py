"""Join tokens and the join exchange.

A token lets a server join a tenant as a node until it expires (``jumpctl nodes add
--ttl 5m``). Tokens are stored under their SHA-256; the value itself is sealed so ``tokens
ls`` can still show it. Static tokens come from the platform's config file and never expire.
A deleted or expired token is remembered for a day so the join can say which it was.
"""

import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from jumpgate.control_plane import keys
from jumpgate.control_plane.ca import Authorities
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import AlreadyExists, InvalidRequest, NotFound, TokenInvalid
from jumpgate.control_plane.records import NodeRecord, TokenRecord
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound
from jumpgate.protocol import certs
from jumpgate.protocol.durations import format_duration
from jumpgate.protocol.names import check_nodename

TOMBSTONE_GRACE = timedelta(days=1)
_NEW_TOKEN = "ask an admin for a new one: jumpctl nodes add"  # noqa: S105 - advice text, not a secret


@dataclass(frozen=True)
class StaticToken:
    """A join token from the config file: ``{tenant, token, system_roles}``."""

    tenant: str
    token: str
    system_roles: tuple[str, ...]  # what it joins as (decision 0026: not a user's roles)


@dataclass(frozen=True)
class JoinToken:
    """A join token as its owner sees it; ``expires`` is ``None`` for static tokens."""

    token: str
    system_roles: list[str]  # what it joins as: node, proxy
    expires: datetime | None
    static: bool = False


@dataclass(frozen=True)
class Joined:
    """A node's new identity."""

    host_id: str
    certificate: str


class TokenService:
    """Issues, lists and revokes join tokens, and exchanges them for host certificates."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        authorities: Authorities,
        static: tuple[StaticToken, ...] = (),
        public_addr: str | None = None,
    ) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._authorities = authorities
        self._static = static
        self._public_addr = public_addr

    def _static_for(self, tenant: str) -> list[StaticToken]:
        return [t for t in self._static if t.tenant == tenant]

    def create(
        self, tenant: str, *, system_roles: list[str], ttl: timedelta, token: str | None = None
    ) -> JoinToken:
        """A new join token; ``token`` chooses its value (at least 16 characters)."""
        value = token or secrets.token_hex(16)
        if any(
            secrets.compare_digest(value.encode(), t.token.encode())
            for t in self._static_for(tenant)
        ):
            raise AlreadyExists("that token is a static token already: choose another value")
        now = self._clock.now()
        record = TokenRecord(
            token=self._box.seal(value.encode(), context=_context(tenant, value)),
            roles=sorted(set(system_roles)),
            expires=now + ttl,
            created=now,
        )
        try:
            self._store.create(
                tenant,
                keys.join_token(value),
                record.to_bytes(),
                expires=record.expires + TOMBSTONE_GRACE,
            )
        except KeyExists as exc:
            raise AlreadyExists("a token with that value exists already: choose another") from exc
        return JoinToken(value, record.roles, record.expires)

    def list(self, tenant: str) -> list[JoinToken]:
        """Live tokens, soonest expiry first, then static tokens."""
        now = self._clock.now()
        tokens = []
        for item in self._store.list_all(tenant, keys.TOKENS):
            record = TokenRecord.from_bytes(item.value)
            if record.deleted is None and record.expires > now:
                value = self._box.open(record.token, context=_context_for_key(tenant, item.key))
                tokens.append(JoinToken(value.decode(), record.roles, record.expires))
        tokens.sort(key=lambda t: (t.expires, t.token))
        static = [
            JoinToken(t.token, list(t.system_roles), None, True) for t in self._static_for(tenant)
        ]
        return tokens + static

    def remove(self, tenant: str, token: str) -> None:
        """Revoke a token at once; a later join with it is told it was deleted."""
        if any(
            secrets.compare_digest(token.encode(), t.token.encode())
            for t in self._static_for(tenant)
        ):
            raise InvalidRequest("static tokens come from the config file: remove it there")
        try:
            item = self._store.get(tenant, keys.join_token(token))
        except KeyNotFound as exc:
            raise NotFound("no such join token: see jumpctl tokens ls") from exc
        record = TokenRecord.from_bytes(item.value)
        if record.deleted is not None or record.expires <= self._clock.now():
            raise NotFound("no such join token (it expired or was deleted): see jumpctl tokens ls")
        tombstone = replace(record, deleted=self._clock.now())
        self._store.compare_and_swap(
            tenant,
            item.key,
            tombstone.to_bytes(),
            revision=item.revision,
            expires=self._clock.now() + TOMBSTONE_GRACE,
        )

    def _check(self, tenant: str, token: str, role: str) -> None:
        """Refuse a token that is unknown, deleted, expired or not for system role ``role``."""
        for static in self._static_for(tenant):
            if secrets.compare_digest(token.encode(), static.token.encode()):
                roles = list(static.system_roles)
                break
        else:
            try:
                record = TokenRecord.from_bytes(
                    self._store.get(tenant, keys.join_token(token)).value
                )
            except KeyNotFound as exc:
                raise TokenInvalid(f"join token not recognised: {_NEW_TOKEN}") from exc
            now = self._clock.now()
            if record.deleted is not None:
                ago = format_duration(now - record.deleted)
                raise TokenInvalid(f"join token was deleted {ago} ago: {_NEW_TOKEN}")
            if record.expires <= now:
                ago = format_duration(now - record.expires)
                raise TokenInvalid(f"join token expired {ago} ago: {_NEW_TOKEN}")
            roles = record.roles
        if role not in roles:
            raise TokenInvalid(
                f"join token is for system role(s) {', '.join(roles)}, not {role}: "
                f"issue one with jumpctl tokens add --type={role}"
            )

    def renew(self, tenant: str, host_id: str) -> str:
        """A fresh host certificate for a joined node's own key (it proved it on its tunnel)."""
        try:
            record = NodeRecord.from_bytes(self._store.get(tenant, keys.node(host_id)).value)
        except KeyNotFound as exc:
            raise NotFound(f"node {host_id} is not joined: join it again") from exc
        return self._authorities.get(tenant, "host").sign_host(
            certs.load_public_key(record.public_key),
            tenant=tenant,
            host_id=host_id,
            nodename=record.nodename,
            now=self._clock.now(),
            public_addr=self._public_addr,
        )

    def join(self, tenant: str, *, token: str, public_key: str, nodename: str) -> Joined:
        """Exchange a node token and a host key for a host certificate."""
        check_nodename(nodename)
        key = certs.load_public_key(public_key)
        authority = self._authorities.get(tenant, "host")
        self._check(tenant, token, "node")
        host_id = str(uuid.uuid4())
        now = self._clock.now()
        certificate = authority.sign_host(
            key,
            tenant=tenant,
            host_id=host_id,
            nodename=nodename,
            now=now,
            public_addr=self._public_addr,
        )
        node = NodeRecord(
            host_id=host_id, nodename=nodename, joined=now, public_key=certs.openssh_public(key)
        )
        self._store.create(tenant, keys.node(host_id), node.to_bytes())
        return Joined(host_id, certificate)


def _context(tenant: str, token: str) -> str:
    return _context_for_key(tenant, keys.join_token(token))


def _context_for_key(tenant: str, key: str) -> str:
    return f"{tenant}/{key}/token"

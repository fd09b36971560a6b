"""Tenants: create one with its CAs and first admin, list them, remove one.

These are the operator's commands (``jumpgate tenants ...``): they run where the state store
is, not through a tenant's API.
"""

import contextlib
from dataclasses import dataclass

from jumpgate.control_plane import keys
from jumpgate.control_plane.ca import Authorities, new_authorities
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import AlreadyExists, UnknownTenant
from jumpgate.control_plane.records import TenantRecord
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import PLATFORM, Create, Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound
from jumpgate.control_plane.users import Invite, UserService
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.models import Role
from jumpgate.protocol.names import check_tenant_name


@dataclass(frozen=True)
class TenantCreated:
    """A new tenant, its CA pin and the first admin's invite."""

    tenant: str
    ca_pin: str
    admin_invite: Invite


class TenantService:
    """The operator's view of tenants."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        authorities: Authorities,
        users: UserService,
    ) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._authorities = authorities
        self._users = users

    def create(
        self,
        name: str,
        *,
        admin: str,
        logins: list[str],
        key_type: KeyType = KeyType.ED25519,
    ) -> TenantCreated:
        """Register ``name``, give it a user CA and a host CA, and invite its admin."""
        check_tenant_name(name)
        record = TenantRecord(name=name, created=self._clock.now(), ca_key_type=key_type.value)
        try:
            self._store.create(PLATFORM, keys.tenant(name), record.to_bytes())
        except KeyExists as exc:
            raise AlreadyExists(f"tenant {name!r} exists already: pick another name") from exc
        try:
            cas = new_authorities(key_type)
            self._store.atomic_write(
                name,
                [
                    Create(keys.ca(kind), ca.to_record(self._box, tenant=name))
                    for kind, ca in cas.items()
                ],
            )
            self._store.put(PLATFORM, keys.user_ca_index(cas["user"].public_key), name.encode())
            invite = self._users.add(name, admin, logins=logins, roles=[Role.ADMIN, Role.ACCESS])
        except BaseException:
            self.remove(name)
            raise
        return TenantCreated(name, certs.ca_pin(cas["host"].public_key), invite)

    def get(self, name: str) -> TenantRecord:
        """The tenant's record; ``UnknownTenant`` if there is none."""
        try:
            return TenantRecord.from_bytes(self._store.get(PLATFORM, keys.tenant(name)).value)
        except KeyNotFound as exc:
            raise UnknownTenant.named(name) from exc

    def list(self) -> list[TenantRecord]:
        """Every tenant, by name."""
        items = self._store.list_all(PLATFORM, keys.TENANTS)
        return [TenantRecord.from_bytes(item.value) for item in items]

    def remove(self, name: str) -> None:
        """Delete the tenant and everything under its prefix; its certificates stop working."""
        check_tenant_name(name)
        try:
            self._store.delete(PLATFORM, keys.tenant(name))
            found = True
        except KeyNotFound:
            found = False
        with contextlib.suppress(KeyNotFound, UnknownTenant):
            for user_ca in self._authorities.get(name, "user").trusted_keys:
                with contextlib.suppress(KeyNotFound):
                    self._store.delete(PLATFORM, keys.user_ca_index(user_ca))
        items = self._store.list_all(name, "")
        for item in items:
            # One by one: an item that expires meanwhile is simply gone already.
            with contextlib.suppress(KeyNotFound):
                self._store.delete(name, item.key)
        self._authorities.forget(name)
        if not found and not items:
            raise UnknownTenant(f"no tenant named {name!r}: see jumpgate tenants ls")

    def by_user_ca(self, public_key: str) -> str:
        """The tenant whose user CA trusts ``public_key``; ``UnknownTenant`` if none."""
        try:
            return self._store.get(PLATFORM, keys.user_ca_index(public_key)).value.decode()
        except KeyNotFound as exc:
            raise UnknownTenant("certificate is not from a cluster served here") from exc

    def ca_pin(self, name: str) -> str:
        """The pin of the tenant's active host CA key (what a node joining now is given)."""
        return certs.ca_pin(self._authorities.get(name, "host").public_key)

"""A tenant's roles: the presets and the ones its admins write.

Roles are stored as their documents under ``roles/<name>``. The presets (``admin``,
``access``, ``auditor``: ``protocol.policy.PRESETS``) exist in every tenant without being
stored, so tenants made before roles existed have them too; a preset an admin changes is
stored like any role. A preset cannot be removed (edit it instead), and no role can be
removed while a user holds it.

Every answer carries ``metadata.revision``, the store's revision of the document (``preset``
for an unchanged preset); an update that names a revision is refused when the stored one
has moved on, so two admins' edits never silently overwrite each other.
"""

import builtins
import secrets
from collections.abc import Iterable, Sequence
from functools import lru_cache

from jumpgate.control_plane import keys
from jumpgate.control_plane.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from jumpgate.control_plane.locks import policy_moved
from jumpgate.control_plane.records import UserRecord
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound, Put, RevisionMismatch
from jumpgate.protocol.policy import PRESETS, AccessChecker, traits_of
from jumpgate.protocol.resources import Role

PRESET_REVISION = "preset"
"""The revision of a preset nobody has changed."""


def _stored(role: Role) -> bytes:
    return _with_revision(role, "").model_dump_json().encode()


@lru_cache(maxsize=1024)
def _read(raw: bytes, revision: str) -> Role:
    """The stored document as a role (parsed once per content and revision: a session's
    check reads a user's roles each time, and validating them is most of its cost)."""
    return _with_revision(Role.model_validate_json(raw), revision)


def _with_revision(role: Role, revision: str) -> Role:
    return role.model_copy(
        update={"metadata": role.metadata.model_copy(update={"revision": revision})}
    )


_PRESETS_ANSWERED = {name: _with_revision(role, PRESET_REVISION) for name, role in PRESETS.items()}


class RoleService:
    """A tenant's roles, read and written."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def revisions(self) -> dict[str, str]:
        """Every tenant's roles revision that has one (for proxies and their nodes)."""
        return {
            item.key.removeprefix(keys.ROLE_REVISIONS): item.value.decode()
            for item in self._store.list_all(PLATFORM, keys.ROLE_REVISIONS)
        }

    def _moved(self, tenant: str) -> None:
        """A role of ``tenant`` changed: nodes drop the definitions they hold."""
        moved = Put(keys.role_revision(tenant), secrets.token_hex(8).encode())
        self._store.atomic_write(PLATFORM, [moved, policy_moved()])

    def get(self, tenant: str, name: str) -> Role:
        """The role, its revision set; ``NotFound`` naming where to look."""
        try:
            item = self._store.get(tenant, keys.role(name))
        except KeyNotFound:
            preset = _PRESETS_ANSWERED.get(name)
            if preset is None:
                raise NotFound(f"role {name!r} not found: see jumpctl get roles") from None
            return preset
        return _read(item.value, item.revision)

    def list(self, tenant: str) -> list[Role]:
        """Every role of the tenant, presets included, by name."""
        stored = {
            role.name: role
            for role in (
                _read(i.value, i.revision) for i in self._store.list_all(tenant, keys.ROLES)
            )
        }
        for name, preset in _PRESETS_ANSWERED.items():
            stored.setdefault(name, preset)
        return [stored[name] for name in sorted(stored)]

    def resolve(self, tenant: str, names: Iterable[str]) -> builtins.list[Role]:
        """The definitions of ``names`` as they stand now; a name with no role (removed since)
        is left out, so it grants nothing."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        if len(wanted) <= 2:  # a user's one or two roles: a read each beats a listing
            found = []
            for name in wanted:
                try:
                    found.append(self.get(tenant, name))
                except NotFound:
                    continue
            return found
        every = {role.name: role for role in self.list(tenant)}
        return [every[name] for name in wanted if name in every]

    def checker(self, tenant: str, user: UserRecord) -> AccessChecker:
        """What ``user`` may do now, from their roles' current definitions."""
        return AccessChecker(self.resolve(tenant, user.roles), traits_of(user.logins))

    def missing(self, tenant: str, names: Sequence[str]) -> builtins.list[str]:
        """Which of ``names`` name no role."""
        known = {role.name for role in self.list(tenant)}
        return [name for name in names if name not in known]

    def create(self, tenant: str, role: Role) -> Role:
        """A new role; ``AlreadyExists`` if the name is taken (a preset's too)."""
        if role.name in PRESETS:
            raise AlreadyExists(
                f"role {role.name!r} exists already (a preset): change it with "
                f"jumpctl edit role/{role.name} or jumpctl create -f"
            )
        try:
            item = self._store.create(tenant, keys.role(role.name), _stored(role))
        except KeyExists:
            raise AlreadyExists(
                f"role {role.name!r} exists already: replace it with jumpctl create -f"
            ) from None
        self._moved(tenant)
        return _with_revision(role, item.revision)

    def put(self, tenant: str, role: Role) -> tuple[Role, bool]:
        """Create or replace ``role``; with ``metadata.revision`` only if the stored role is
        still that revision (``Conflict`` if not). Whether it was created."""
        expected = role.metadata.revision
        key = keys.role(role.name)
        try:
            current = self._store.get(tenant, key)
        except KeyNotFound:
            current = None
        if current is None:
            if expected and not (expected == PRESET_REVISION and role.name in PRESETS):
                raise Conflict(f"role {role.name!r} was removed since you read it: read it again")
            try:
                item = self._store.create(tenant, key, _stored(role))
            except KeyExists:
                raise _changed(role.name) from None
            self._moved(tenant)
            return _with_revision(role, item.revision), role.name not in PRESETS
        if expected and expected != current.revision:
            raise _changed(role.name)
        try:
            item = self._store.compare_and_swap(
                tenant, key, _stored(role), revision=current.revision
            )
        except (RevisionMismatch, KeyNotFound):
            raise _changed(role.name) from None
        self._moved(tenant)
        return _with_revision(role, item.revision), False

    def remove(self, tenant: str, name: str, users: Sequence[UserRecord]) -> None:
        """Remove a role nobody holds; a preset stays (it can be changed, not removed)."""
        if name in PRESETS:
            raise InvalidRequest(
                f"role {name!r} is a preset and cannot be removed: change it with "
                f"jumpctl edit role/{name}"
            )
        holders = sorted(user.name for user in users if name in user.roles)
        if holders:
            shown = ", ".join(holders[:5]) + (
                f" and {len(holders) - 5} more" if len(holders) > 5 else ""
            )
            raise InvalidRequest(
                f"role {name!r} is held by {shown}: take it from them first "
                "(jumpctl users update NAME --set-roles ...)"
            )
        try:
            self._store.delete(tenant, keys.role(name))
        except KeyNotFound:
            raise NotFound(f"role {name!r} not found: see jumpctl get roles") from None
        self._moved(tenant)


def _changed(name: str) -> Conflict:
    return Conflict(
        f"role {name!r} changed since you read it: read it again (jumpctl get role/{name}) "
        "and make your change there"
    )

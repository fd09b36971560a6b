"""The ``/v1`` routes of roles, locks and one user: read, written and audited with the
caller as the actor.

They register on the public API's resolver (``api.build_app``), each naming the kind and verb
the caller's roles must allow. A write naming a revision that has moved on is refused (409);
an unknown role given to a user is one line naming it (400); nothing is changed by a refusal.
The old ``/v1/users/<name>/lock`` routes are kept for ``jumpctl users lock``: they create
and remove user locks (lock resources with a user target), audited as before and as locks.
"""

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import AfterValidator

from jumpgate.control_plane import errors
from jumpgate.control_plane.authn import Identity
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.control_plane.records import UserRecord
from jumpgate.protocol import models, routes
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.names import check_login, check_user_name, node_name
from jumpgate.protocol.policy import Subject, lock_applies
from jumpgate.protocol.resources import Kind, Lock, LockTarget, Role, Verb, check_name

UserParam = Annotated[str, Path(max_length=128), AfterValidator(unquote)]
RoleParam = Annotated[str, Path(max_length=63), AfterValidator(unquote)]
LockParam = Annotated[str, Path(max_length=64), AfterValidator(unquote)]


class Recorder(Protocol):
    """Audits an event of the request being served (``api.build_app``'s ``record``)."""

    def __call__(
        self,
        event_type: EventType,
        tenant: str,
        identity: Identity | None = None,
        *,
        outcome: str = "I",
        **fields: Any,
    ) -> None: ...


def check_roles_exist(plane: ControlPlane, tenant: str, names: Sequence[str]) -> None:
    """Refuse (400, one line naming them) roles the tenant does not have."""
    missing = plane.roles.missing(tenant, names)
    if missing:
        shown = ", ".join(repr(name) for name in missing)
        noun = "role" if len(missing) == 1 else "roles"
        raise errors.InvalidRequest(
            f"{noun} {shown} not found: create it first (jumpctl create -f FILE) "
            "or see jumpctl get roles"
        )


def user_info(
    plane: ControlPlane,
    tenant: str,
    user: UserRecord,
    *,
    locks: Iterable[Lock] | None = None,
    revision: str = "",
) -> models.UserInfo:
    """A user as the API shows it; ``lock`` says why and until when if they are stopped."""
    now = plane.clock.now()
    message = user.access_lock(now)
    stopping = plane.users.lock_of(tenant, user, locks)
    if message is not None:
        until = user.lock_expires.isoformat() if user.lock_expires else "unlocked"
        lock: str | None = f"{message} (until {until})"
    elif stopping is not None:
        expires = stopping.spec.expires
        until = expires.isoformat() if expires else "unlocked"
        lock = f"{stopping.spec.message or 'locked by an admin'} (until {until})"
    elif user.locked(now) and user.locked_until is not None:
        lock = f"failed logins (until {user.locked_until.isoformat()})"
    else:
        lock = None
    state = "locked" if lock else ("active" if user.password_hash else "invited")
    return models.UserInfo(
        name=user.name,
        roles=user.roles,
        logins=user.logins,
        status=state,
        created=user.created,
        lock=lock,
        revision=revision,
    )


def lock_fields(lock: Lock) -> dict[str, Any]:
    """What the audit log says of a lock: its id (``name``), target, message and expiry."""
    target = lock.spec.target
    fields: dict[str, Any] = {
        f"target_{key}": value for key, value in target.model_dump().items() if value
    }
    return {
        "name": lock.name,
        **fields,
        "message": lock.spec.message,
        "expires": lock.spec.expires.isoformat() if lock.spec.expires else "",
    }


def register(
    app: APIGatewayHttpResolver,
    plane: ControlPlane,
    *,
    allowed: Callable[[Kind, Verb], Identity],
    record: Recorder,
) -> None:
    """Declare the routes of roles, locks and one user on ``app``."""

    def audit_lock(event_type: EventType, identity: Identity, lock: Lock) -> None:
        record(event_type, identity.tenant, identity, **lock_fields(lock))

    # Roles

    @app.get(routes.ROLES.path, summary="Roles of the cluster, presets included")
    def list_roles() -> models.RoleList:
        identity = allowed(Kind.ROLE, Verb.LIST)
        return models.RoleList(roles=plane.roles.list(identity.tenant))

    @app.get(routes.ROLE.path, summary="A role, with its revision")
    def get_role(name: RoleParam) -> Role:
        identity = allowed(Kind.ROLE, Verb.READ)
        return plane.roles.get(identity.tenant, name)

    @app.post(routes.ROLE_CREATE.path, status_code=201, summary="Create a role")
    def create_role(body: Role) -> Role:
        identity = allowed(Kind.ROLE, Verb.CREATE)
        created = plane.roles.create(identity.tenant, body)
        record(EventType.ROLE_CREATED, identity.tenant, identity, name=created.name)
        return created

    @app.put(routes.ROLE_PUT.path, summary="Create or replace a role (revision checked)")
    def put_role(name: RoleParam, body: Role) -> Role:
        identity = allowed(Kind.ROLE, Verb.UPDATE)
        if body.name != name:
            raise errors.InvalidRequest(
                f"metadata.name {body.name!r} is not the role addressed ({name!r}): "
                "rename by creating the new role and removing the old"
            )
        try:
            plane.roles.get(identity.tenant, name)
        except errors.NotFound:
            identity.authorize(Kind.ROLE, Verb.CREATE)
        stored, created = plane.roles.put(identity.tenant, body)
        event = EventType.ROLE_CREATED if created else EventType.ROLE_UPDATED
        record(event, identity.tenant, identity, name=stored.name)
        return stored

    @app.delete(routes.ROLE_REMOVE.path, status_code=204, summary="Remove a role nobody holds")
    def remove_role(name: RoleParam) -> None:
        identity = allowed(Kind.ROLE, Verb.DELETE)
        plane.roles.remove(identity.tenant, name, plane.users.list(identity.tenant))
        record(EventType.ROLE_DELETED, identity.tenant, identity, name=name)

    # Locks

    @app.get(routes.LOCKS.path, summary="Locks in force")
    def list_locks() -> models.LockList:
        identity = allowed(Kind.LOCK, Verb.LIST)
        return models.LockList(locks=plane.locks.list(identity.tenant))

    @app.post(routes.LOCK_ADD.path, status_code=201, summary="Lock a user, role, node or login")
    def add_lock(body: models.LockRequest) -> Lock:
        identity = allowed(Kind.LOCK, Verb.CREATE)
        _check_target_names(body.target)
        if body.target.node:  # as ``jump ssh`` names it: web-1.acme.<addr> is node web-1
            node = node_name(identity.tenant, body.target.node, plane.settings.public_addr)
            body = body.model_copy(update={"target": body.target.model_copy(update={"node": node})})
        me, _ = plane.users.get(identity.tenant, identity.user)
        if lock_applies(body.target, Subject(user=me.name, user_id=me.id, roles=identity.roles)):
            raise errors.InvalidRequest(
                "this lock would stop you too, and nobody could lift it through the API: "
                "narrow its target, or ask another admin"
            )
        lock = plane.locks.create(
            identity.tenant,
            body.target,
            message=body.message,
            ttl=timedelta(seconds=body.ttl_seconds) if body.ttl_seconds is not None else None,
            expires=_aware(body.expires) if body.expires is not None else None,
            created_by=identity.user,
        )
        audit_lock(EventType.LOCK_CREATED, identity, lock)
        return lock

    @app.delete(routes.LOCK_REMOVE.path, status_code=204, summary="Lift a lock")
    def remove_lock(name: LockParam) -> None:
        identity = allowed(Kind.LOCK, Verb.DELETE)
        audit_lock(EventType.LOCK_DELETED, identity, plane.locks.remove(identity.tenant, name))

    # One user

    @app.get(routes.USER.path, summary="A user, with its revision")
    def get_user(name: UserParam) -> models.UserInfo:
        identity = allowed(Kind.USER, Verb.READ)
        user, revision = plane.users.get(identity.tenant, name)
        return user_info(plane, identity.tenant, user, revision=revision)

    @app.put(routes.USER_UPDATE.path, summary="Change a user's roles or logins")
    def update_user(name: UserParam, body: models.UserUpdateRequest) -> models.UserInfo:
        identity = allowed(Kind.USER, Verb.UPDATE)
        plane.users.get(identity.tenant, name)  # NotFound before judging the roles
        if body.roles is not None:
            check_roles_exist(plane, identity.tenant, body.roles)
        user, revision = plane.users.change(
            identity.tenant, name, roles=body.roles, logins=body.logins, revision=body.revision
        )
        record(
            EventType.USER_UPDATE,
            identity.tenant,
            identity,
            name=user.name,
            roles=user.roles,
            logins=user.logins,
        )
        return user_info(plane, identity.tenant, user, revision=revision)

    @app.put(routes.USER_LOCK.path, summary="Lock a user out of the API and of SSH")
    def lock_user(name: UserParam, body: models.UserLockRequest) -> models.UserInfo:
        identity = allowed(Kind.LOCK, Verb.CREATE)
        if name == identity.user:
            raise errors.InvalidRequest("you cannot lock yourself: ask another admin")
        user, _ = plane.users.get(identity.tenant, name)
        lock = plane.locks.create(
            identity.tenant,
            LockTarget(user=user.name),
            message=body.message,
            ttl=timedelta(seconds=body.ttl_seconds) if body.ttl_seconds is not None else None,
            created_by=identity.user,
        )
        info = user_info(plane, identity.tenant, user, locks=[lock])
        record(EventType.USER_LOCK, identity.tenant, identity, name=name, lock=info.lock)
        audit_lock(EventType.LOCK_CREATED, identity, lock)
        return info

    @app.delete(routes.USER_UNLOCK.path, summary="Unlock a user")
    def unlock_user(name: UserParam) -> models.UserInfo:
        identity = allowed(Kind.LOCK, Verb.DELETE)
        plane.users.get(identity.tenant, name)
        for lock in plane.locks.list(identity.tenant):
            if lock.spec.target == LockTarget(user=name):
                plane.locks.remove(identity.tenant, lock.name)
                audit_lock(EventType.LOCK_DELETED, identity, lock)
        user = plane.users.unlock(identity.tenant, name)
        record(EventType.USER_UNLOCK, identity.tenant, identity, name=name)
        return user_info(plane, identity.tenant, user)


def _check_target_names(target: LockTarget) -> None:
    """A lock's user, role and login as the platform spells them (a name in another case
    would match nobody, silently); 400 with the checker's one line."""
    checks = (
        (target.user, check_user_name),
        (target.role, check_name),
        (target.login, check_login),
    )
    for value, check in checks:
        if value:
            try:
                check(value)
            except ValueError as exc:
                raise errors.InvalidRequest(f"lock target: {exc}") from None


def _aware(moment: datetime) -> datetime:
    """A time without a zone is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

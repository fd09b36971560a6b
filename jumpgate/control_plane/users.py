"""Users of a tenant: invites, signup (password and TOTP enrolment), listing, locks, removal.

A user is created by an admin with an invite token (one hour by default); ``jump signup``
spends the invite to set a bcrypt password and enrol a TOTP secret, which is sealed with the
master key before it is stored.

``check_access`` is the one rule for a certificate already issued, asked by the API on every
request and by the proxy on every new SSH connection: the user must still exist as the same
user (a namesake added later has another id) and not be locked by an admin (a lock resource
naming the user, their id or one of their roles, or the record's own lock from before locks
were resources).
"""

import base64
import hashlib
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import bcrypt
import pyotp

from jumpgate.control_plane import keys, records
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import (
    AlreadyExists,
    Conflict,
    InvalidRequest,
    InviteInvalid,
    NotFound,
    Unauthenticated,
    UserLocked,
)
from jumpgate.control_plane.locks import LockService, message_of
from jumpgate.control_plane.records import InviteRecord, UserRecord
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import CompareAndSwap, Create, Delete, Store
from jumpgate.control_plane.store.base import AtomicWriteFailed, KeyNotFound, RevisionMismatch
from jumpgate.protocol.durations import format_duration
from jumpgate.protocol.names import check_login, check_user_name
from jumpgate.protocol.policy import Subject, lock_applies
from jumpgate.protocol.resources import Lock

BCRYPT_ROUNDS = 10
"""bcrypt cost: about 60 ms a check on one core here; see docs/decisions/0002."""
INVITE_TTL = timedelta(hours=1)
INVITE_GRACE = timedelta(days=1)
"""An expired invite is kept this long so signup can say it expired rather than 'unknown'."""
PASSWORD_MIN, PASSWORD_MAX = 12, 128
LOCK_MESSAGE_MAX = 200


@dataclass(frozen=True)
class Invite:
    """An invite token for ``jump signup`` and when it expires."""

    user: str
    token: str
    expires: datetime


@dataclass(frozen=True)
class Enrolment:
    """What signup shows once: the TOTP secret and its otpauth URI."""

    user: str
    totp_secret: str
    otpauth_uri: str


def hash_password(password: str, *, rounds: int = BCRYPT_ROUNDS) -> str:
    """A bcrypt hash of a password of 12 to 128 characters."""
    encoded = password.encode()
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(
            f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters: choose another"
        )
    if len(encoded) > 72:
        # bcrypt reads 72 bytes; longer passwords are pre-hashed so every byte counts.
        encoded = _prehash(encoded)
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds)).decode()


def decoy_hash(rounds: int = BCRYPT_ROUNDS) -> str:
    """A bcrypt hash at cost ``rounds`` that no password matches, to check against when the
    user is unknown so a refusal costs the same either way.

    Checking costs what the cost says, whatever the hash; only its salt must be well formed.
    So it is written out, not made by hashing (a hash at cost 10 is 60 ms of every cold start).
    """
    return f"$2b${rounds:02d}${'.' * 22}DecoyNeverMatchesAnyPassword..."


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password``."""
    encoded = password.encode()
    if len(encoded) > 72:
        encoded = _prehash(encoded)
    return bcrypt.checkpw(encoded, hashed.encode())


def _prehash(encoded: bytes) -> bytes:
    return base64.b64encode(hashlib.sha256(encoded).digest())


class UserService:
    """A tenant's users."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        locks: LockService,
        *,
        bcrypt_rounds: int = BCRYPT_ROUNDS,
    ) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._locks = locks
        self.bcrypt_rounds = bcrypt_rounds

    def add(
        self,
        tenant: str,
        name: str,
        *,
        logins: list[str],
        roles: Sequence[str],
        invite_ttl: timedelta = INVITE_TTL,
    ) -> Invite:
        """Create the user and an invite for ``jump signup``."""
        check_user_name(name)
        for login in logins:
            check_login(login)
        now = self._clock.now()
        token = secrets.token_hex(
            16
        )  # hex: never starts with "-", which a shell flag parser would take
        invite = InviteRecord(user=name, expires=now + invite_ttl)
        user = UserRecord(
            name=name,
            roles=sorted({str(role) for role in roles}),
            logins=list(dict.fromkeys(logins)),
            created=now,
            id=secrets.token_hex(8),
            invite=keys.invite(token),
        )
        try:
            self._store.atomic_write(
                tenant,
                [
                    Create(keys.user(name), user.to_bytes()),
                    Create(
                        keys.invite(token), invite.to_bytes(), expires=invite.expires + INVITE_GRACE
                    ),
                ],
            )
        except AtomicWriteFailed as exc:
            raise AlreadyExists(f"user {name!r} exists already: see jumpctl users ls") from exc
        return Invite(name, token, invite.expires)

    def get(self, tenant: str, name: str) -> tuple[UserRecord, str]:
        """The user's record and its revision; ``NotFound`` if absent (or not a user name)."""
        try:
            item = self._store.get(tenant, keys.user(check_user_name(name)))
        except (KeyNotFound, ValueError) as exc:
            raise NotFound(f"user {name!r} not found: see jumpctl users ls") from exc
        return UserRecord.from_bytes(item.value), item.revision

    def list(self, tenant: str) -> list[UserRecord]:
        """Every user of the tenant, by name."""
        return [UserRecord.from_bytes(i.value) for i in self._store.list_all(tenant, keys.USERS)]

    def update(
        self, tenant: str, name: str, change: Callable[[UserRecord], UserRecord]
    ) -> UserRecord:
        """Apply ``change`` to the user's record (see ``records.update``)."""
        try:
            updated = records.update(
                self._store, tenant, keys.user(check_user_name(name)), UserRecord, change
            )
        except (KeyNotFound, ValueError) as exc:
            raise NotFound(f"user {name!r} not found: see jumpctl users ls") from exc
        assert updated is not None
        return updated

    def change(
        self,
        tenant: str,
        name: str,
        *,
        roles: Sequence[str] | None = None,
        logins: Sequence[str] | None = None,
        revision: str = "",
    ) -> tuple[UserRecord, str]:
        """Set the user's roles or logins (what is None is kept) and say the new revision;
        with ``revision``, only if the stored record is still that one (``Conflict`` if
        not, so an edit made on an old read never overwrites a newer change)."""
        for login in logins or ():
            check_login(login)
        key = keys.user(name)
        for _ in range(records.CAS_ATTEMPTS):
            record, current = self.get(tenant, name)
            if revision and revision != current:
                raise _changed(name)
            updated = replace(
                record,
                roles=sorted(set(roles)) if roles is not None else record.roles,
                logins=list(dict.fromkeys(logins)) if logins is not None else record.logins,
            )
            try:
                item = self._store.compare_and_swap(
                    tenant, key, updated.to_bytes(), revision=current
                )
            except (RevisionMismatch, KeyNotFound):
                if revision:
                    raise _changed(name) from None
                continue
            return updated, item.revision
        raise Conflict(f"user {name!r} is being changed by someone else: try again")

    def lock(
        self, tenant: str, name: str, *, message: str, ttl: timedelta | None = None
    ) -> UserRecord:
        """Lock the user out of the API and of new SSH connections, until ``ttl`` or unlock."""
        message = " ".join(message.split()) or "locked by an admin"
        if len(message) > LOCK_MESSAGE_MAX:
            raise InvalidRequest(f"lock message is longer than {LOCK_MESSAGE_MAX} characters")
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidRequest("lock ttl must be positive, e.g. --ttl=1h")
        expires = self._clock.now() + ttl if ttl is not None else None
        return self.update(
            tenant, name, lambda r: replace(r, lock_message=message, lock_expires=expires)
        )

    def unlock(self, tenant: str, name: str) -> UserRecord:
        """Lift an admin lock and a lockout after failed logins."""
        return self.update(
            tenant,
            name,
            lambda r: replace(
                r, lock_message=None, lock_expires=None, locked_until=None, failed_logins=0
            ),
        )

    def check_access(self, tenant: str, name: str, user_id: str) -> UserRecord:
        """The user a certificate names, if that certificate may still be used."""
        try:
            record, _ = self.get(tenant, name)
        except NotFound as exc:
            raise Unauthenticated(f"user {name!r} no longer exists: ask a tenant admin") from exc
        if not secrets.compare_digest(record.id.encode(), user_id.encode()):
            raise Unauthenticated(
                f"certificate was issued to an earlier user {name!r}: run jump login"
            )
        refusal = self.stopped(tenant, record)
        if refusal is not None:
            raise UserLocked(refusal)
        return record

    def stopped(self, tenant: str, record: UserRecord) -> str | None:
        """Why ``record``'s user may use neither the API nor new connections now (an admin's
        lock on the record, from before lock resources, or a lock naming the user, their id
        or one of their roles), else None."""
        message = record.access_lock(self._clock.now())
        if message is not None:
            return f"user {record.name!r} is locked ({message}): ask a tenant admin"
        lock = self.lock_of(tenant, record)
        return message_of(lock) if lock is not None else None

    def lock_of(
        self, tenant: str, record: UserRecord, among: Iterable[Lock] | None = None
    ) -> Lock | None:
        """The first lock in force (of ``among``, else the tenant's) that stops the user's
        API calls: one with no node or login."""
        subject = Subject(user=record.name, user_id=record.id, roles=record.roles)
        for lock in self._locks.list(tenant) if among is None else among:
            if lock_applies(lock.spec.target, subject):
                return lock
        return None

    def remove(self, tenant: str, name: str) -> None:
        """Delete the user and any pending invite; their certificates stop working at once."""
        user, revision = self.get(tenant, name)
        ops: list[Delete] = [Delete(keys.user(name), revision)]
        if user.invite:
            try:
                self._store.get(tenant, user.invite)
                ops.append(Delete(user.invite))
            except KeyNotFound:
                pass
        self._store.atomic_write(tenant, ops)

    def signup(self, tenant: str, token: str, password: str) -> Enrolment:
        """Spend an invite: set the password and enrol a fresh TOTP secret."""
        try:
            invite_item = self._store.get(tenant, keys.invite(token))
        except KeyNotFound as exc:
            raise InviteInvalid(
                "invite token not recognised (used already, or never issued): "
                "ask an admin for a new one: jumpctl users add"
            ) from exc
        invite = InviteRecord.from_bytes(invite_item.value)
        now = self._clock.now()
        if invite.expires <= now:
            ago = format_duration(now - invite.expires)
            raise InviteInvalid(
                f"invite expired {ago} ago: ask an admin for a new one: jumpctl users add"
            )
        password_hash = hash_password(password, rounds=self.bcrypt_rounds)
        try:
            user, revision = self.get(tenant, invite.user)
        except NotFound as exc:
            raise InviteInvalid("the invited user was removed: ask an admin") from exc
        secret = pyotp.random_base32()
        sealed = self._box.seal(secret.encode(), context=totp_context(tenant, user.name))
        updated = replace(user, password_hash=password_hash, totp_secret=sealed, invite=None)
        try:
            self._store.atomic_write(
                tenant,
                [
                    CompareAndSwap(keys.user(user.name), updated.to_bytes(), revision),
                    Delete(keys.invite(token), invite_item.revision),
                ],
            )
        except AtomicWriteFailed as exc:
            raise InviteInvalid("invite token was used already: run jump login") from exc
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.name, issuer_name=f"Jumpgate {tenant}")
        return Enrolment(user.name, secret, uri)


def _changed(name: str) -> Conflict:
    return Conflict(
        f"user {name!r} changed since you read it: read it again "
        f"(jumpctl get user/{name}) and make your change there"
    )


def totp_context(tenant: str, user: str) -> str:
    """What a user's sealed TOTP secret is bound to."""
    return f"{tenant}/{keys.user(user)}/totp_secret"

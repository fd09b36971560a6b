"""Login: password and TOTP in, a short-lived SSH user certificate out.

Rules a person would expect from a bastion:

- five failed logins in a row lock the user for thirty minutes;
- a one-time code works once: its TOTP time step must be newer than the last one used,
  recorded by compare-and-swap so two concurrent logins cannot both spend it;
- an unknown user costs one bcrypt check like a known one, so timing tells nothing;
- the certificate lives 12 h, or the TTL asked for, and never longer than the user's roles'
  ``max_session_ttl`` (a longer request is capped, as Teleport does; the answer says until
  when);
- its principals are the logins the roles grant (``{{internal.logins}}`` from the user's
  ``logins`` trait) minus those any role denies, and it permits port and agent forwarding
  only as the roles' options say.
"""

import hmac
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import pyotp

from jumpgate.control_plane.ca import Authorities
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import (
    Conflict,
    LockedOut,
    LoginFailed,
    NotFound,
    OTPReplayed,
    UserLocked,
)
from jumpgate.control_plane.records import UserRecord
from jumpgate.control_plane.roles import RoleService
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.users import UserService, check_password, decoy_hash, totp_context
from jumpgate.protocol import certs
from jumpgate.protocol.durations import format_duration
from jumpgate.protocol.policy import traits_of

MAX_FAILED_LOGINS = 5
LOCK_DURATION = timedelta(minutes=30)
MAX_CERT_TTL = timedelta(seconds=certs.USER_CERT_DEFAULT_TTL_SECONDS)
TOTP_PERIOD = 30
TOTP_WINDOW = 1
"""Codes of the previous and next 30-second step are accepted for clock drift."""


@dataclass(frozen=True)
class Certificate:
    """What a successful login returns."""

    user: str
    roles: list[str]
    logins: list[str]  # the certificate's principals: what the roles grant
    certificate: str
    valid_before: datetime


class LoginService:
    """Checks credentials and issues user certificates."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        clock: Clock,
        authorities: Authorities,
        users: UserService,
        roles: RoleService,
    ) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._authorities = authorities
        self._users = users
        self._roles = roles
        # Checked against when the user is unknown, so failure costs the same either way.
        self._decoy_hash = decoy_hash(users.bcrypt_rounds)

    def login(
        self,
        tenant: str,
        *,
        user: str,
        password: str,
        otp: str,
        public_key: str,
        ttl: timedelta | None = None,
    ) -> Certificate:
        """Verify password and code, then certify ``public_key`` for the user's logins."""
        key = certs.load_public_key(public_key)
        self._authorities.get(tenant, "user")  # UnknownTenant before anything else
        try:
            record, _ = self._users.get(tenant, user)
        except NotFound:
            check_password(password, self._decoy_hash)
            raise LoginFailed(_FAILED) from None
        now = self._clock.now()
        if record.locked(now):
            assert record.locked_until is not None
            raise UserLocked(_locked_message(record.locked_until - now))
        refusal = self._users.stopped(tenant, record)
        if refusal is not None:
            raise UserLocked(refusal)
        step = self._check_credentials(tenant, record, password, otp, now)
        record = self._spend(tenant, user, step)
        return self.issue(tenant, record, key, ttl=ttl, now=now)

    def issue(
        self,
        tenant: str,
        record: UserRecord,
        key: certs.PublicKey,
        *,
        ttl: timedelta | None,
        now: datetime,
    ) -> Certificate:
        """Certify ``key`` for a user whose credentials were verified (the issuing path)."""
        authority = self._authorities.get(tenant, "user")
        checker = self._roles.checker(tenant, record)
        cert_ttl = min(ttl or MAX_CERT_TTL, checker.max_session_ttl)
        certificate, valid_before = authority.sign_user(
            key,
            tenant=tenant,
            user=record.name,
            user_id=record.id,
            roles=record.roles,
            logins=checker.logins,
            now=now,
            ttl=cert_ttl,
            traits=traits_of(record.logins),
            port_forwarding=checker.port_forwarding,
            agent_forwarding=checker.forward_agent,
        )
        return Certificate(record.name, record.roles, checker.logins, certificate, valid_before)

    def _check_credentials(
        self, tenant: str, record: UserRecord, password: str, otp: str, now: datetime
    ) -> int:
        """The TOTP step the code matched; records a failure and raises when anything is off."""
        if record.password_hash is None or record.totp_secret is None:
            check_password(password, self._decoy_hash)
            raise LoginFailed(_FAILED)
        password_ok = check_password(password, record.password_hash)
        secret = self._box.open(record.totp_secret, context=totp_context(tenant, record.name))
        step = _matching_step(secret.decode(), otp, now)
        if not password_ok or step is None:
            locked_until = self._record_failure(tenant, record.name)
            if locked_until is not None:
                reason = f"{MAX_FAILED_LOGINS} failed logins"
                raise LockedOut(
                    f"{_FAILED}; {reason}: user {record.name!r} is locked for "
                    f"{format_duration(LOCK_DURATION)} (or until an admin unlocks it)",
                    user=record.name,
                    reason=reason,
                    locked_until=locked_until,
                )
            raise LoginFailed(_FAILED)
        if step <= record.last_otp_step:
            raise OTPReplayed("one-time code already used: wait for the next code and try again")
        return step

    def _record_failure(self, tenant: str, name: str) -> datetime | None:
        """Count a failed login; when it was the last one allowed, lock the user and say
        until when."""

        def fail(record: UserRecord) -> UserRecord:
            failures = record.failed_logins + 1
            if failures < MAX_FAILED_LOGINS:
                return replace(record, failed_logins=failures)
            return replace(record, failed_logins=0, locked_until=self._clock.now() + LOCK_DURATION)

        try:
            updated = self._users.update(tenant, name, fail)
        except Conflict:  # a storm of failures: some go uncounted
            return None
        return updated.locked_until if updated.failed_logins == 0 else None

    def _spend(self, tenant: str, name: str, step: int) -> UserRecord:
        """Record the code's step as used and clear failures; exactly one login wins a step."""

        def spend(record: UserRecord) -> UserRecord:
            if step <= record.last_otp_step:
                raise OTPReplayed(
                    "one-time code already used: wait for the next code and try again"
                )
            return replace(record, last_otp_step=step, failed_logins=0, locked_until=None)

        try:
            return self._users.update(tenant, name, spend)
        except Conflict:
            raise OTPReplayed(
                "one-time code is being used by another login: try the next code"
            ) from None


_FAILED = "login failed: wrong user name, password or one-time code"


def _locked_message(remaining: timedelta) -> str:
    return (
        f"user is locked after {MAX_FAILED_LOGINS} failed logins: try again in "
        f"{format_duration(remaining)} or ask an admin"
    )


def _matching_step(secret: str, otp: str, now: datetime) -> int | None:
    """The TOTP time step within the drift window whose code equals ``otp``."""
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    current = int(now.timestamp()) // TOTP_PERIOD
    matched = None
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        # Compare every step (no early exit) so timing does not reveal which matched.
        if hmac.compare_digest(totp.at(step * TOTP_PERIOD).encode(), otp.encode()):
            matched = step
    return matched

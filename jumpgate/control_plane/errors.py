"""Errors of the control plane, each with a message a person can act on.

::

    JumpgateError
    ├── InvalidRequest          bad input the caller can fix
    ├── Unauthenticated         no valid proof of identity
    │   ├── CertificateExpired
    │   ├── LoginFailed         wrong user, password or code (never says which)
    │   │   └── LockedOut       ... and the last one allowed: the user is now locked
    │   ├── UserLocked          by an admin, or after failed logins
    │   └── OTPReplayed         a code already used
    ├── AccessDenied            authenticated but not allowed
    ├── InviteInvalid           expired, used or unknown invite
    ├── TokenInvalid            expired, deleted or wrong-role join token
    ├── UnknownTenant
    ├── NotFound
    ├── AlreadyExists
    ├── Conflict                a concurrent change won; retry
    │   └── RecordingModified   a stored part no longer matches its digest
    └── StoreUnavailable        a store failed (throttled, unreachable); retry later

The HTTP status and problem type of each live in one table, ``handlers.problems``.
"""

from datetime import datetime


class JumpgateError(Exception):
    """Base of every error the control plane reports to a caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(JumpgateError):
    """The request is malformed or breaks a rule the caller can fix."""


class Unauthenticated(JumpgateError):
    """The caller proved no identity, or a wrong one."""


class CertificateExpired(Unauthenticated):
    """The caller's certificate is outside its validity window."""


class LoginFailed(Unauthenticated):
    """Wrong user name, password or one-time code; deliberately does not say which."""


class LockedOut(LoginFailed):
    """A failed login that was the last one allowed: the user is now locked for a while."""

    def __init__(self, message: str, *, user: str, reason: str, locked_until: datetime) -> None:
        super().__init__(message)
        self.user = user
        self.reason = reason  # e.g. "5 failed logins"
        self.locked_until = locked_until


class UserLocked(Unauthenticated):
    """Locked: by an admin, or for a while after too many failed logins."""


class OTPReplayed(Unauthenticated):
    """The one-time code was already used."""


class AccessDenied(JumpgateError):
    """The caller is known but its roles do not allow this."""


class InviteInvalid(JumpgateError):
    """The invite token is unknown, used or expired."""


class TokenInvalid(JumpgateError):
    """The join token is unknown, deleted, expired or not for this role."""


class UnknownTenant(JumpgateError):
    """No tenant of that name is served here."""

    @classmethod
    def named(cls, tenant: str) -> "UnknownTenant":
        """The error for an address naming ``tenant``: people meet it at jump login, jumpctl
        --auth-server and a node's join, so it says where the name came from."""
        return cls(
            f"no cluster named {tenant!r} is served here: check the cluster name in the "
            "address (clusters are NAME.<platform address>); ask your admin"
        )


class NotFound(JumpgateError):
    """The addressed object does not exist."""


class AlreadyExists(JumpgateError):
    """An object of that name exists already."""


class Conflict(JumpgateError):
    """A concurrent writer changed the object first."""


class RecordingModified(Conflict):
    """A recording's stored part differs from what was recorded (or is gone)."""


class StoreUnavailable(JumpgateError):
    """A store did not answer or refused for now; the caller should retry later."""

"""Audit events: their types, stable codes and common fields.

Every event has a type (``session.start``) and a code (``J2000I``) that never change once
published, so searches, alerts and SIEM rules written against them keep working. The code's
last letter says how it went: ``I`` information (success), ``W`` warning (refused), ``E``
error (failed). Codes are Jumpgate's own, laid out as Teleport's are (``T2000I``), so a
reader of both finds the same families in the same thousands.

Events are JSON: the common fields below, plus the fields of their type (``command`` and
``exit_code`` of an ``exec``, ``path``, ``length`` and ``action`` of an ``scp``, ...).
"""

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class EventType(StrEnum):
    AUTH = "auth"
    USER_LOGIN = "user.login"
    USER_LOGIN_LIMITED = "user.login.limited"  # refused by a proxy's rate limit, not checked
    USER_CREATE = "user.create"
    USER_DELETE = "user.delete"
    USER_LOCK = "user.lock"
    USER_UNLOCK = "user.unlock"
    USER_SIGNUP = "user.signup"  # an invite spent: password set, TOTP enrolled
    USER_UPDATE = "user.update"  # roles or logins changed
    ROLE_CREATED = "role.created"
    ROLE_UPDATED = "role.updated"
    ROLE_DELETED = "role.deleted"
    LOCK_CREATED = "lock.created"
    LOCK_DELETED = "lock.deleted"
    SESSION_START = "session.start"
    SESSION_JOIN = "session.join"
    SESSION_RESIZE = "resize"
    SESSION_LEAVE = "session.leave"
    SESSION_END = "session.end"
    SESSION_UPLOAD = "session.upload"
    SESSION_OVER_BUDGET = "session.over_budget"  # a node ended a session over its audit budget
    SESSION_REJECTED = "session.rejected"  # a proxy refused to open a session, and why
    EXEC = "exec"
    SCP = "scp"
    SFTP = "sftp"
    PORT = "port"  # a port forward on a node: a direct-tcpip channel, a listener, a connection
    JOIN = "join"
    TOKEN_CREATE = "token.create"  # noqa: S105 - an event name, not a secret
    TOKEN_DELETE = "token.delete"  # noqa: S105 - an event name, not a secret
    TENANT_CREATE = "tenant.create"
    NODE_DELETE = "node.delete"
    RECORDING_SETTINGS = "recording.settings"
    AUDIT_DROPPED = "audit.dropped"  # a node event the proxy did not take, and why


TRANSFER_ENV = ("JUMPGATE_TRANSFER", "scp")
"""The ``env`` request ``jump scp`` sends before its SFTP subsystem: the node audits that
session's files as ``scp``, what the user ran (docs/decisions/0029); every other SFTP session
(OpenSSH's ``sftp``, and its ``scp`` of version 9, which the wire cannot tell apart) is ``sftp``."""


_CODES: dict[EventType, str] = {
    EventType.USER_LOGIN: "J1000",
    EventType.USER_LOGIN_LIMITED: "J1008",
    EventType.USER_CREATE: "J1002",
    EventType.USER_DELETE: "J1004",
    EventType.USER_LOCK: "J1006",
    EventType.USER_UNLOCK: "J1007",
    EventType.USER_SIGNUP: "J1009",
    EventType.USER_UPDATE: "J1003",
    EventType.ROLE_CREATED: "J9010",
    EventType.ROLE_UPDATED: "J9011",
    EventType.ROLE_DELETED: "J9012",
    EventType.LOCK_CREATED: "J9013",
    EventType.LOCK_DELETED: "J9014",
    EventType.SESSION_START: "J2000",
    EventType.SESSION_JOIN: "J2001",
    EventType.SESSION_RESIZE: "J2002",
    EventType.SESSION_LEAVE: "J2003",
    EventType.SESSION_END: "J2004",
    EventType.SESSION_UPLOAD: "J2005",
    EventType.SESSION_OVER_BUDGET: "J2006",
    EventType.SESSION_REJECTED: "J2007",
    EventType.EXEC: "J3002",
    EventType.PORT: "J3003",
    EventType.SCP: "J3004",
    EventType.AUTH: "J3007",
    EventType.SFTP: "J8000",
    EventType.JOIN: "J9000",
    EventType.TOKEN_CREATE: "J9001",
    EventType.TOKEN_DELETE: "J9002",
    EventType.NODE_DELETE: "J9003",
    EventType.RECORDING_SETTINGS: "J9004",
    EventType.AUDIT_DROPPED: "J9005",
    EventType.TENANT_CREATE: "J9100",
}


def code(event_type: EventType, outcome: str = "I") -> str:
    """The stable code of ``event_type`` with ``outcome`` ``I``, ``W`` or ``E``."""
    if outcome not in ("I", "W", "E"):
        raise ValueError(f"outcome must be I, W or E, not {outcome!r}")
    return _CODES[event_type] + outcome


def table() -> list[tuple[str, str]]:
    """Every event type with its code family, for documentation and ``--type`` help."""
    return [(t.value, _CODES[t]) for t in EventType]


class AuditEvent(BaseModel):
    """One event; fields of its type ride along as extra keys."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)  # built when first used

    type: EventType
    code: str
    time: datetime
    id: str
    tenant: str
    user: str = ""
    login: str = ""
    server_id: str = ""
    session_id: str = ""
    local_addr: str = ""
    remote_addr: str = ""
    success: bool = True
    error: str = ""


class AuditPage(BaseModel):
    """A page of a search, newest or oldest first; pass ``cursor`` back for the next."""

    model_config = ConfigDict(defer_build=True)

    events: list[AuditEvent]
    cursor: str | None = None


MAX_SEARCH_LIMIT = 1000
DEFAULT_SEARCH_LIMIT = 100


def field_text(value: str, limit: int) -> str:
    """``value`` as a field every audit store keeps: at most ``limit`` characters, and what
    UTF-8 cannot encode (a lone surrogate, as JSON's ``"\\ud800"`` decodes to) written as
    its escape. A request's text may be either; an event that cannot be stored would be
    refused, and lost (docs/decisions/0017)."""
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")[:limit]

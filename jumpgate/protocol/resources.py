"""Roles and locks as documents, in the shape Teleport admins write: ``kind``, ``version``,
``metadata.name``, ``spec``.

These are what ``jumpctl get/create/edit`` read and write as YAML, what the API takes and
answers, and what the control plane stores. What a role *means* (who may reach what) is
decided in ``protocol.policy``, from these documents, by the control plane, the proxy and the
node alike.

A role::

    kind: role
    version: v1
    metadata: {name: prod-access}
    spec:
      allow:
        logins: ['{{internal.logins}}', ubuntu]
        node_labels: {env: [staging, prod], team: '^db-.*$'}
        rules:
          - resources: [session]
            verbs: [list, read]
      deny:
        logins: [root]
      options: {max_session_ttl: 8h, port_forwarding: false, client_idle_timeout: 15m}

A lock names at least one of user, role, node and login; a session matches when every named
field matches it.
"""

import importlib
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from jumpgate.protocol.durations import parse_duration
from jumpgate.protocol.invalid import rule as said_as

__all__ = [
    "MAX_SESSION_TTL",
    "OWN_SESSIONS",
    "RESOURCE_VERSION",
    "TRAIT_LOGINS",
    "Conditions",
    "Kind",
    "Lock",
    "LockMessage",
    "LockSpec",
    "LockTarget",
    "Metadata",
    "Role",
    "RoleOptions",
    "RoleSpec",
    "Rule",
    "TraitMap",
    "Verb",
    "check_duration",
    "check_label_value",
    "check_name",
    "expand_traits",
]

RESOURCE_VERSION = "v1"


class Kind(StrEnum):
    """What the API serves, as ``rules`` name it."""

    USER = "user"
    ROLE = "role"
    TOKEN = "token"  # noqa: S105 - join tokens, a kind's name
    NODE = "node"
    SESSION = "session"  # recordings of sessions
    EVENT = "event"  # the audit log
    LOCK = "lock"
    SETTINGS = "settings"  # the cluster's settings (how sessions are recorded)


class Verb(StrEnum):
    LIST = "list"
    READ = "read"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


OWN_SESSIONS = "contains(session.participants, user.metadata.name)"
"""The one ``where`` a rule may have: the rule covers only the caller's own sessions (as in
Teleport's preset ``access`` role)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,62}$")
_LABEL_KEY = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_./-]{0,62})$")
_TRAIT = re.compile(r"\{\{\s*internal\.([a-z_]+)\s*\}\}")
_LOGIN_OR_TRAIT = re.compile(r"^([a-z_][a-z0-9_.-]{0,31}|\{\{\s*internal\.[a-z_]+\s*\}\})$")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid name: use lowercase letters, digits and . _ @ + -, at most 63"
        )
    return name


MAX_REPEATS = 3
"""Repetitions one label expression may hold: Python's expressions backtrack, and four
``\\w*`` in a row take seconds over a label of 256 characters."""
_parser: Any = importlib.import_module("re._parser")  # the stdlib's own parser, untyped


class _Backtracks(ValueError):
    """An expression whose matching time can grow exponentially with the value."""


def _repeats(items: Any, inside_repeat: bool) -> int:
    """How many repetitions ``items`` (a parsed expression) holds; ``_Backtracks`` for a
    repetition of something that repeats or branches, or a back-reference."""
    count = 0
    for op, arg in items:
        if op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT):
            _, most, body = arg
            if most > 1:
                if inside_repeat:
                    raise _Backtracks
                count += 1
            count += _repeats(body, inside_repeat or most > 1)
        elif op == _parser.BRANCH:
            if inside_repeat:
                raise _Backtracks
            count += sum(_repeats(alternative, inside_repeat) for alternative in arg[1])
        elif op == _parser.SUBPATTERN:
            count += _repeats(arg[3], inside_repeat)
        elif op in (_parser.ASSERT, _parser.ASSERT_NOT):
            count += _repeats(arg[1], inside_repeat)
        elif op == _parser.ATOMIC_GROUP:
            count += _repeats(arg, inside_repeat)
        elif op in (_parser.GROUPREF, _parser.GROUPREF_EXISTS):
            raise _Backtracks
    return count


def check_label_value(value: str) -> str:
    """A label matcher's value: ``*``, a glob, or a regular expression written ``^...$``
    that matches in time proportional to the value (no repeated repetition or alternation,
    no back-reference, at most ``MAX_REPEATS`` repetitions): one tenant's role must not
    hold the workers that decide for every tenant."""
    if value.startswith("^") and value.endswith("$"):
        try:
            repeats = _repeats(_parser.parse(value), False)
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regular expression ({exc})") from None
        except _Backtracks:
            raise ValueError(
                f"{value!r} may take too long to match (a repetition of a repetition or of "
                "alternatives, or a back-reference): write it without, e.g. ^(web|db)-[0-9]+$"
            ) from None
        if repeats > MAX_REPEATS:
            raise ValueError(
                f"{value!r} has {repeats} repetitions: use at most {MAX_REPEATS} in one expression"
            )
    return value


def _check_label_key(key: str) -> str:
    if not _LABEL_KEY.fullmatch(key):
        raise ValueError(f"label key {key!r} must be '*' or letters, digits and _ . / -")
    return key


def check_message(text: str) -> str:
    """A lock's message: printable text, since the stopped user's terminal shows it as is
    (an escape sequence in it would be run there)."""
    if not all(char.isprintable() or char in " \t" for char in text):
        raise ValueError("a lock message is printable text: no control characters or escapes")
    return text


def check_duration(text: str) -> str:
    """A duration as written (``8h``, ``30m``), kept as written so YAML round-trips."""
    if parse_duration(text) <= timedelta(0):
        raise ValueError(f"duration {text!r} must be more than 0s")
    return text


def _check_login_or_trait(value: str) -> str:
    if not _LOGIN_OR_TRAIT.fullmatch(value):
        raise ValueError(
            f"login {value!r} is not an OS user name or a trait such as '{{{{internal.logins}}}}'"
        )
    return value


def _check_session_ttl(text: str) -> str:
    if parse_duration(text) > MAX_SESSION_TTL:
        hours = int(MAX_SESSION_TTL.total_seconds()) // 3600
        raise ValueError(f"{text} is longer than {hours}h, the longest a certificate may live")
    return text


def _check_idle_timeout(text: str) -> str:
    return text if text in ("", "0s") else check_duration(text)


Name = Annotated[str, AfterValidator(check_name)]
LabelKey = Annotated[str, AfterValidator(_check_label_key)]


def _check_label_values(value: object) -> object:
    """One check, so a wrong value is one error: text or a list of text, each a valid
    matcher."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"must be text or a list of text, not {value!r}"[:120])
    for text in values:
        assert isinstance(text, str)
        if len(text) > 256:
            raise ValueError("a label value is at most 256 characters")
        check_label_value(text)
    return value


LabelValues = Annotated[str | list[str], BeforeValidator(_check_label_values)]
DurationText = Annotated[str, Field(max_length=32), AfterValidator(check_duration)]
LoginOrTrait = Annotated[str, AfterValidator(_check_login_or_trait)]
LockMessage = Annotated[str, Field(max_length=200), AfterValidator(check_message)]
MAX_SESSION_TTL = timedelta(hours=30)
"""The longest ``max_session_ttl`` a role may give (Teleport's default); certificates are
12 h unless a role allows longer and the login asks for it."""
# One check each, so a wrong value is one error at its own key (not at ``options``, nor at
# a branch of a union pydantic would name).
SessionTTL = Annotated[DurationText, AfterValidator(_check_session_ttl)]
IdleTimeout = Annotated[str, Field(max_length=32), AfterValidator(_check_idle_timeout)]
KindOrAll = Annotated[Kind | Literal["*"], said_as(f"'*' or a kind ({', '.join(Kind)})")]
VerbOrAll = Annotated[Verb | Literal["*"], said_as(f"'*' or a verb ({', '.join(Verb)})")]


class _Document(BaseModel):
    """Strict about what it knows: a misspelt key is an error naming it, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Metadata(_Document):
    name: Name
    description: str = Field(default="", max_length=500)
    revision: str = Field(default="", max_length=128)
    """Set by the platform when it answers; an update that carries one is refused if the
    stored document has moved on (``jumpctl edit``). Not part of the YAML people keep."""


class Rule(_Document):
    """Verbs over kinds of resource; ``*`` is every kind or every verb."""

    resources: list[KindOrAll] = Field(min_length=1, max_length=16)
    verbs: list[VerbOrAll] = Field(min_length=1, max_length=8)
    where: Annotated[
        Literal["", "contains(session.participants, user.metadata.name)"],
        said_as(f"empty or {OWN_SESSIONS!r}"),
    ] = Field(default="", description="only the caller's own sessions")


class Conditions(_Document):
    """What a role allows, or denies."""

    logins: list[LoginOrTrait] = Field(default_factory=list, max_length=64)
    node_labels: dict[LabelKey, LabelValues] = Field(default_factory=dict, max_length=32)
    rules: list[Rule] = Field(default_factory=list, max_length=32)


class RoleOptions(_Document):
    """What a certificate and a session get. Across roles the strictest wins, except
    ``forward_agent``, which any role can grant (as in Teleport)."""

    max_session_ttl: SessionTTL = "12h"
    forward_agent: bool = False
    port_forwarding: bool = True
    client_idle_timeout: IdleTimeout = ""  # "" or "0s": never
    disconnect_expired_cert: bool = False


class RoleSpec(_Document):
    allow: Conditions = Field(default_factory=Conditions)
    deny: Conditions = Field(default_factory=Conditions)
    options: RoleOptions = Field(default_factory=RoleOptions)


class Role(_Document):
    """A role resource."""

    kind: Literal["role"] = "role"
    version: Literal["v1"] = "v1"
    metadata: Metadata
    spec: RoleSpec = Field(default_factory=RoleSpec)

    @property
    def name(self) -> str:
        return self.metadata.name


class LockTarget(_Document):
    """Whom a lock stops; every field given must match. ``user_id`` is set by the platform
    when a removed user's connections are ended (a later namesake is not that user)."""

    user: str = Field(default="", max_length=128)
    user_id: str = Field(default="", max_length=64)
    role: str = Field(default="", max_length=63)
    node: str = Field(default="", max_length=253)  # a node's name or uuid
    login: str = Field(default="", max_length=32)

    @model_validator(mode="after")
    def _something(self) -> "LockTarget":
        if not (self.user or self.user_id or self.role or self.node or self.login):
            raise ValueError("a lock needs a target: --user, --role, --node or --login")
        return self


class LockSpec(_Document):
    target: LockTarget
    message: str = Field(default="", max_length=200)  # checked where written (LockMessage)
    expires: datetime | None = None
    created_by: str = Field(default="", max_length=128)


class Lock(_Document):
    """A lock resource; its name is the platform's id for it."""

    kind: Literal["lock"] = "lock"
    version: Literal["v1"] = "v1"
    metadata: Metadata
    spec: LockSpec

    @property
    def name(self) -> str:
        return self.metadata.name


TRAIT_LOGINS = "logins"
TraitMap = dict[str, list[str]]


def expand_traits(values: list[str], traits: TraitMap) -> list[str]:
    """``values`` with each ``{{internal.NAME}}`` replaced by the user's trait ``NAME`` (none
    if the user has no such trait), in order, without repeats."""
    out: list[str] = []
    for value in values:
        match = _TRAIT.fullmatch(value.strip())
        out.extend(traits.get(match.group(1), []) if match else [value])
    return list(dict.fromkeys(out))

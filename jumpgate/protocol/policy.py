"""Who may reach what: the one evaluation of roles and locks, pure and without I/O.

The control plane (API rules, certificates, listings, the per-session check), the proxy and
the node all decide with ``AccessChecker`` and ``lock_applies``, so they cannot disagree.
The semantics are Teleport's:

- **Deny wins.** A role whose ``deny.node_labels`` match a node denies that node to the user
  whatever other roles allow; a login in any role's ``deny.logins`` is never granted; a
  ``deny`` rule over a kind and verb refuses it whatever ``allow`` says.
- **Allow is per role.** A node is reachable as a login when *one* role both allows the
  login and matches the node's labels (a role for ``dba`` on databases and another for
  ``web`` on web servers do not add up to ``dba`` on web servers).
- **Label matchers**: every key of a role's ``node_labels`` must match (a key ``*`` matches
  any key); a value matches when any of its values does: ``*`` anything, ``^...$`` a regular
  expression over the whole value, a value with ``*`` a glob, else the exact text. An empty
  ``allow.node_labels`` reaches no node.
- **Options**: the shortest ``max_session_ttl`` and ``client_idle_timeout``, port forwarding
  unless a role turns it off, agent forwarding if a role turns it on, and the certificate's
  expiry ends sessions if a role says so.

Matchers are compiled once per checker: deciding for one session is a few dictionary lookups
and, for regular expressions, one match each (``bench/access.py`` measures it).
"""

import fnmatch
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from jumpgate.protocol.durations import parse_duration
from jumpgate.protocol.resources import (
    OWN_SESSIONS,
    TRAIT_LOGINS,
    Conditions,
    Kind,
    Lock,
    LockTarget,
    Metadata,
    Role,
    RoleOptions,
    RoleSpec,
    Rule,
    TraitMap,
    Verb,
    expand_traits,
)

__all__ = [
    "PRESETS",
    "AccessChecker",
    "Decision",
    "Subject",
    "lock_applies",
    "lock_message",
    "preset_roles",
]

ADMIN, ACCESS, AUDITOR = "admin", "access", "auditor"
_EVERYWHERE = {"*": "*"}
_OWN_LOGINS = ["{{internal.logins}}"]


def _preset(name: str, description: str, allow: Conditions, **options: object) -> Role:
    return Role(
        metadata=Metadata(name=name, description=description),
        spec=RoleSpec(allow=allow, options=RoleOptions.model_validate(options)),
    )


PRESETS: dict[str, Role] = {
    ADMIN: _preset(
        ADMIN,
        "Manages the cluster: every resource, and every node as the user's logins",
        Conditions(
            logins=_OWN_LOGINS,
            node_labels=_EVERYWHERE,
            rules=[Rule(resources=["*"], verbs=["*"])],
        ),
        forward_agent=True,
    ),
    ACCESS: _preset(
        ACCESS,
        "Reaches every node as the user's logins; reads the user's own sessions",
        Conditions(
            logins=_OWN_LOGINS,
            node_labels=_EVERYWHERE,
            rules=[
                Rule(resources=[Kind.NODE], verbs=[Verb.LIST, Verb.READ]),
                Rule(resources=[Kind.SESSION], verbs=[Verb.LIST, Verb.READ], where=OWN_SESSIONS),
            ],
        ),
        forward_agent=True,
    ),
    AUDITOR: _preset(
        AUDITOR,
        "Reads recorded sessions and the audit log; reaches no node",
        Conditions(
            rules=[Rule(resources=[Kind.SESSION, Kind.EVENT], verbs=[Verb.LIST, Verb.READ])]
        ),
    ),
}
"""The roles every tenant has from the start; the two roles of before RBAC (``admin``,
``access``) are two of them, so users created then keep what they had."""


def preset_roles() -> list[Role]:
    return list(PRESETS.values())


@dataclass(frozen=True)
class Decision:
    """Whether something is allowed; ``reason`` is the user's one line when it is not."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Subject:
    """Whom a lock is checked against: a user, their roles, and (for a session) the node
    and the login."""

    user: str
    user_id: str = ""
    roles: Collection[str] = ()
    node_names: Collection[str] = ()  # the node's uuid and name; empty for an API call
    login: str = ""


def lock_applies(target: LockTarget, subject: Subject) -> bool:
    """Whether a lock with ``target`` stops ``subject``. A lock naming a node or a login stops
    only sessions on that node or as that login, never the user's API calls."""
    if target.user and target.user != subject.user:
        return False
    if target.user_id and target.user_id != subject.user_id:
        return False
    if target.role and target.role not in subject.roles:
        return False
    if target.node and target.node.lower() not in {n.lower() for n in subject.node_names}:
        return False  # a hostname (or uuid) in any case names the same node
    return not (target.login and target.login != subject.login)


def lock_message(lock: Lock) -> str:
    """What a user stopped by ``lock`` reads (the API, the proxy and the node say the same)."""
    target = lock.spec.target
    who = (
        f"user {target.user!r}"
        if target.user
        else f"role {target.role!r}"
        if target.role
        else f"node {target.node!r}"
        if target.node
        else f"login {target.login!r}"
    )
    because = lock.spec.message or "locked by an admin"
    return f"{who} is locked ({because}): ask a tenant admin"


MAX_MATCHED_VALUE = 256
"""A node's label value longer than this (nodes report their own labels) is not run through
globs and expressions, whose time can grow with it: it matches no allow and every deny."""


@lru_cache(maxsize=4096)
def _value_matcher(value: str) -> re.Pattern[str] | None:
    """``None`` for ``*``, else the compiled expression the value stands for."""
    if value == "*":
        return None
    if value.startswith("^") and value.endswith("$"):
        return re.compile(value)
    if "*" in value:
        return re.compile(fnmatch.translate(value))
    return re.compile(re.escape(value) + r"\Z")


_Patterns = tuple[re.Pattern[str], ...]
_SEEN_VALUES = 1024
"""Label values whose outcome one key of one checker keeps (a checker lives one request)."""


class _Labels:
    """A role's ``node_labels`` compiled: every key must match one of its values. The keys
    are split by what checking them takes, cheapest first (the order is free, as every key
    must match, and most nodes a role does not reach fail at a set lookup): keys with only
    exact values (one lookup), keys with ``*`` among their values (only present), keys
    with globs or expressions, and the key ``*``."""

    def __init__(self, labels: Mapping[str, str | list[str]], *, deny: bool = False) -> None:
        self.empty = not labels
        self._deny = deny
        self._exact_only: list[tuple[str, frozenset[str]]] = []
        self._present: list[str] = []
        # with, per key, what its values gave: a listing meets the same few values (env,
        # region, team) on thousands of nodes; bounded, as some labels are unique per node
        self._patterned: list[tuple[str, frozenset[str], _Patterns, dict[str, bool]]] = []
        self._any_key: list[tuple[frozenset[str], _Patterns]] = []
        for key, given in labels.items():
            values = [given] if isinstance(given, str) else given
            anything = "*" in values
            exact = frozenset(v for v in values if _is_exact(v))
            patterns = tuple(
                m for v in values if (m := _value_matcher(v)) is not None and v not in exact
            )
            if key == "*":
                if not anything:  # '*': '*' is every node, labelled or not
                    self._any_key.append((exact, patterns))
            elif anything:
                self._present.append(key)
            elif patterns:
                self._patterned.append((key, exact, patterns, {}))
            else:
                self._exact_only.append((key, exact))

    @property
    def universal(self) -> bool:
        """Whether every node matches (``'*': '*'``): no key constrains it."""
        return not (
            self.empty or self._exact_only or self._present or self._patterned or self._any_key
        )

    def fresh(self) -> "_Labels":
        """The same compiled matchers, with nothing kept yet: what label values gave is
        kept per checker (one request), so it never outgrows one listing."""
        copy = object.__new__(_Labels)
        copy.__dict__.update(self.__dict__)
        copy._patterned = [
            (key, exact, patterns, {}) for key, exact, patterns, _ in self._patterned
        ]
        return copy

    def match(self, labels: Mapping[str, str]) -> bool:
        if self.empty:
            return False
        get = labels.get
        for key, exact in self._exact_only:
            if get(key) not in exact:
                return False
        for key in self._present:
            if key not in labels:
                return False
        for key, exact, patterns, seen in self._patterned:
            value = get(key)
            if value is None:
                return False
            matched = seen.get(value)
            if matched is None:
                matched = _value_matches(value, exact, patterns, self._deny)
                if len(seen) < _SEEN_VALUES and len(value) <= MAX_MATCHED_VALUE:
                    seen[value] = matched
            if not matched:
                return False
        for exact, patterns in self._any_key:
            if not any(_value_matches(v, exact, patterns, self._deny) for v in labels.values()):
                return False
        return True


def _labels_of(labels: Mapping[str, str | list[str]], *, deny: bool) -> _Labels:
    """``labels`` compiled, once for every checker of every role that writes the same."""
    items = tuple((k, v if isinstance(v, str) else tuple(v)) for k, v in labels.items())
    return _compiled_labels(items, deny).fresh()


@lru_cache(maxsize=1024)
def _compiled_labels(items: tuple[tuple[str, str | tuple[str, ...]], ...], deny: bool) -> _Labels:
    return _Labels({k: v if isinstance(v, str) else list(v) for k, v in items}, deny=deny)


def _is_exact(value: str) -> bool:
    return value != "*" and "*" not in value and not (value.startswith("^") and value.endswith("$"))


def _value_matches(
    value: str, exact: frozenset[str], patterns: tuple[re.Pattern[str], ...], deny: bool
) -> bool:
    if value in exact:
        return True
    if not patterns:
        return False
    if len(value) > MAX_MATCHED_VALUE:
        return deny  # not run: see MAX_MATCHED_VALUE
    return any(pattern.match(value) is not None for pattern in patterns)


def _rule_covers(rule: Rule, kind: Kind, verb: Verb) -> bool:
    return ("*" in rule.resources or kind in rule.resources) and (
        "*" in rule.verbs or verb in rule.verbs
    )


@dataclass(frozen=True)
class _Compiled:
    name: str
    logins: frozenset[str]
    labels: _Labels
    deny_labels: _Labels
    deny_logins: frozenset[str]


class AccessChecker:
    """One user's roles, compiled: what they may reach, do and get in a certificate."""

    def __init__(self, roles: Sequence[Role], traits: TraitMap) -> None:
        self.roles = list(roles)
        self.role_names = [role.name for role in self.roles]
        self._compiled = [
            _Compiled(
                name=role.name,
                logins=frozenset(expand_traits(role.spec.allow.logins, traits)),
                labels=_labels_of(role.spec.allow.node_labels, deny=False),
                deny_labels=_labels_of(role.spec.deny.node_labels, deny=True),
                deny_logins=frozenset(expand_traits(role.spec.deny.logins, traits)),
            )
            for role in self.roles
        ]
        self._denied_logins = frozenset().union(*(c.deny_logins for c in self._compiled))
        # what a listing checks for each node, without the roles that cannot change it
        self._deny_labels = [c.deny_labels for c in self._compiled if not c.deny_labels.empty]
        self._allow_labels = [c.labels for c in self._compiled if not c.labels.empty]
        # a role reaching every node decides alone: checking the others first changes nothing
        self._allow_labels = [labels for labels in self._allow_labels if labels.universal][
            :1
        ] or self._allow_labels
        allowed = [login for c in self._compiled for login in sorted(c.logins)]
        self.logins = [
            login for login in dict.fromkeys(allowed) if login not in self._denied_logins
        ]
        """The certificate's principals: every login a role allows, minus every denied one."""

    # Nodes and logins

    def _denied_by(self, labels: Mapping[str, str]) -> str | None:
        for compiled in self._compiled:
            if compiled.deny_labels.match(labels):
                return compiled.name
        return None

    def node_access(self, nodename: str, labels: Mapping[str, str]) -> Decision:
        """Whether some login reaches the node (the proxy's check, before it can know which
        login an ``ssh -J`` will use)."""
        denier = self._denied_by(labels)
        if denier is not None:
            return _node_denied(nodename, denier)
        for compiled in self._compiled:
            if compiled.labels.match(labels) and compiled.logins - self._denied_logins:
                return Decision(True)
        return Decision(False, f"your roles do not allow node {nodename!r}: see jump ls")

    def login_access(self, nodename: str, labels: Mapping[str, str], login: str) -> Decision:
        """Whether ``login`` reaches the node (the node's check, and the proxy's when the
        login is known)."""
        denier = self._denied_by(labels)
        if denier is not None:
            return _node_denied(nodename, denier)
        if login in self._denied_logins:
            return Decision(
                False, f"login {login!r} is denied to you by your roles: jump status lists yours"
            )
        for compiled in self._compiled:
            if login in compiled.logins and compiled.labels.match(labels):
                return Decision(True)
        return Decision(
            False, f"your roles do not allow login {login!r} on node {nodename!r}: see jump ls"
        )

    def visible(self, labels: Mapping[str, str]) -> bool:
        """Whether a listing shows the node: some role's labels match it and no role denies it."""
        for deny in self._deny_labels:
            if deny.match(labels):
                return False
        return any(allow.match(labels) for allow in self._allow_labels)

    # The API's rules

    def allows(self, kind: Kind, verb: Verb, *, own: bool = False) -> bool:
        """Whether a rule allows ``verb`` over ``kind`` and none denies it; ``own`` says the
        resource is the caller's own session, which a ``where`` rule covers."""
        for role in self.roles:
            for rule in role.spec.deny.rules:
                if _rule_covers(rule, kind, verb) and (not rule.where or own):
                    return False
        return any(
            _rule_covers(rule, kind, verb) and (not rule.where or own)
            for role in self.roles
            for rule in role.spec.allow.rules
        )

    def allows_some(self, kind: Kind, verb: Verb) -> bool:
        """Whether ``verb`` over ``kind`` is allowed for some resources (perhaps only the
        caller's own): a listing answers, filtered by ``allows(..., own=...)``."""
        return self.allows(kind, verb) or self.allows(kind, verb, own=True)

    # Options

    def _options(self) -> list[RoleOptions]:
        return [role.spec.options for role in self.roles]

    @property
    def max_session_ttl(self) -> timedelta:
        """The longest a certificate may live: the shortest any role allows."""
        ttls = [parse_duration(o.max_session_ttl) for o in self._options()]
        return min(ttls) if ttls else timedelta(hours=12)

    @property
    def forward_agent(self) -> bool:
        return any(o.forward_agent for o in self._options())

    @property
    def port_forwarding(self) -> bool:
        return bool(self.roles) and all(o.port_forwarding for o in self._options())

    @property
    def client_idle_timeout(self) -> timedelta | None:
        """The shortest idle time after which a session is ended; None for never."""
        ttls = [
            parse_duration(o.client_idle_timeout)
            for o in self._options()
            if o.client_idle_timeout not in ("", "0s")
        ]
        return min(ttls) if ttls else None

    @property
    def disconnect_expired_cert(self) -> bool:
        return any(o.disconnect_expired_cert for o in self._options())


def _node_denied(nodename: str, denier: str) -> Decision:
    return Decision(False, f"node {nodename!r} is denied to you by role {denier!r}: see jump ls")


def traits_of(logins: Sequence[str]) -> TraitMap:
    """A user's traits as roles read them (``{{internal.logins}}``)."""
    return {TRAIT_LOGINS: list(logins)}

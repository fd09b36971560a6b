"""Who may reach what, as a table: every role set x node x login written down and checked
through ``protocol.policy`` (the one evaluation the API, the proxy and the node share), then
principals, options, the API's rules and which locks stop whom."""

import time
from datetime import timedelta
from typing import Any

import pytest

from jumpgate.protocol.policy import PRESETS, AccessChecker, Subject, lock_applies, traits_of
from jumpgate.protocol.resources import Kind, LockTarget, Role, Verb


def _role(name: str, allow: Any = None, deny: Any = None, options: Any = None) -> Role:
    return Role.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"allow": allow or {}, "deny": deny or {}, "options": options or {}},
        }
    )


ROLES = {
    role.name: role
    for role in (
        # the user's own logins (a trait) and 'dev' where env is one of a list
        _role(
            "dev",
            {"logins": ["{{internal.logins}}", "dev"], "node_labels": {"env": ["dev", "staging"]}},
        ),
        # a regular expression over the whole value, and a key that only has to be there
        _role("dbre", {"logins": ["postgres"], "node_labels": {"team": "^db-.*$", "env": "*"}}),
        # a glob
        _role("web", {"logins": ["www"], "node_labels": {"host": "web-*"}}),
        # every node ('*': '*'), root allowed here but denied by the same role
        _role(
            "all",
            {"logins": ["{{internal.logins}}", "ubuntu", "root"], "node_labels": {"*": "*"}},
            {"logins": ["root"]},
        ),
        # root on dev nodes: any role's deny of root beats it
        _role("rooter", {"logins": ["root"], "node_labels": {"env": "dev"}}),
        # a deny label only
        _role("noprod", deny={"node_labels": {"env": "prod"}}),
        # sees prod nodes in a listing, may log in to none
        _role("viewer", {"node_labels": {"env": "prod"}}),
        # options only: grants nothing, restricts nothing but options
        _role("opts", options={"max_session_ttl": "1h", "port_forwarding": False}),
    )
}
TRAITS = traits_of(["alice"])

NODES: dict[str, dict[str, str]] = {
    "dev1": {"env": "dev", "host": "web-1"},
    "stg-db": {"env": "staging", "team": "db-core"},
    "prod-db": {"env": "prod", "team": "db-core"},
    "prod-web": {"env": "prod", "host": "web-2"},
    "qa-db": {"env": "qa", "team": "db"},  # 'db' is not '^db-.*$'
    "db-noenv": {"team": "db-x"},  # dbre needs an env label, whatever its value
    "webby": {"env": "dev-2", "host": "webserver"},  # not 'dev', not 'web-*'
    "bare": {},
}

# One row per (role set, node): '+' allowed, '-' refused, for each login; 'reach' is
# node_access (some login reaches it: the proxy's check) and 'ls' is visible (a listing).
GRID = """
roles        node     alice dev postgres www ubuntu root  reach ls
dev          dev1     +     +   -        -   -      -     +     +
dev          stg-db   +     +   -        -   -      -     +     +
dev          prod-db  -     -   -        -   -      -     -     -
dev          prod-web -     -   -        -   -      -     -     -
dev          qa-db    -     -   -        -   -      -     -     -
dev          db-noenv -     -   -        -   -      -     -     -
dev          webby    -     -   -        -   -      -     -     -
dev          bare     -     -   -        -   -      -     -     -
dbre         dev1     -     -   -        -   -      -     -     -
dbre         stg-db   -     -   +        -   -      -     +     +
dbre         prod-db  -     -   +        -   -      -     +     +
dbre         prod-web -     -   -        -   -      -     -     -
dbre         qa-db    -     -   -        -   -      -     -     -
dbre         db-noenv -     -   -        -   -      -     -     -
dbre         webby    -     -   -        -   -      -     -     -
dbre         bare     -     -   -        -   -      -     -     -
web          dev1     -     -   -        +   -      -     +     +
web          stg-db   -     -   -        -   -      -     -     -
web          prod-db  -     -   -        -   -      -     -     -
web          prod-web -     -   -        +   -      -     +     +
web          qa-db    -     -   -        -   -      -     -     -
web          db-noenv -     -   -        -   -      -     -     -
web          webby    -     -   -        -   -      -     -     -
web          bare     -     -   -        -   -      -     -     -
all          dev1     +     -   -        -   +      -     +     +
all          stg-db   +     -   -        -   +      -     +     +
all          prod-db  +     -   -        -   +      -     +     +
all          prod-web +     -   -        -   +      -     +     +
all          qa-db    +     -   -        -   +      -     +     +
all          db-noenv +     -   -        -   +      -     +     +
all          webby    +     -   -        -   +      -     +     +
all          bare     +     -   -        -   +      -     +     +
all,noprod   dev1     +     -   -        -   +      -     +     +
all,noprod   stg-db   +     -   -        -   +      -     +     +
all,noprod   prod-db  -     -   -        -   -      -     -     -
all,noprod   prod-web -     -   -        -   -      -     -     -
all,noprod   qa-db    +     -   -        -   +      -     +     +
all,noprod   db-noenv +     -   -        -   +      -     +     +
all,noprod   webby    +     -   -        -   +      -     +     +
all,noprod   bare     +     -   -        -   +      -     +     +
dbre,web     dev1     -     -   -        +   -      -     +     +
dbre,web     stg-db   -     -   +        -   -      -     +     +
dbre,web     prod-db  -     -   +        -   -      -     +     +
dbre,web     prod-web -     -   -        +   -      -     +     +
dbre,web     qa-db    -     -   -        -   -      -     -     -
dbre,web     db-noenv -     -   -        -   -      -     -     -
dbre,web     webby    -     -   -        -   -      -     -     -
dbre,web     bare     -     -   -        -   -      -     -     -
rooter       dev1     -     -   -        -   -      +     +     +
rooter       stg-db   -     -   -        -   -      -     -     -
rooter       prod-db  -     -   -        -   -      -     -     -
rooter       prod-web -     -   -        -   -      -     -     -
rooter       qa-db    -     -   -        -   -      -     -     -
rooter       db-noenv -     -   -        -   -      -     -     -
rooter       webby    -     -   -        -   -      -     -     -
rooter       bare     -     -   -        -   -      -     -     -
rooter,all   dev1     +     -   -        -   +      -     +     +
rooter,all   stg-db   +     -   -        -   +      -     +     +
rooter,all   prod-db  +     -   -        -   +      -     +     +
rooter,all   prod-web +     -   -        -   +      -     +     +
rooter,all   qa-db    +     -   -        -   +      -     +     +
rooter,all   db-noenv +     -   -        -   +      -     +     +
rooter,all   webby    +     -   -        -   +      -     +     +
rooter,all   bare     +     -   -        -   +      -     +     +
noprod       dev1     -     -   -        -   -      -     -     -
noprod       stg-db   -     -   -        -   -      -     -     -
noprod       prod-db  -     -   -        -   -      -     -     -
noprod       prod-web -     -   -        -   -      -     -     -
noprod       qa-db    -     -   -        -   -      -     -     -
noprod       db-noenv -     -   -        -   -      -     -     -
noprod       webby    -     -   -        -   -      -     -     -
noprod       bare     -     -   -        -   -      -     -     -
viewer       dev1     -     -   -        -   -      -     -     -
viewer       stg-db   -     -   -        -   -      -     -     -
viewer       prod-db  -     -   -        -   -      -     -     +
viewer       prod-web -     -   -        -   -      -     -     +
viewer       qa-db    -     -   -        -   -      -     -     -
viewer       db-noenv -     -   -        -   -      -     -     -
viewer       webby    -     -   -        -   -      -     -     -
viewer       bare     -     -   -        -   -      -     -     -
opts         dev1     -     -   -        -   -      -     -     -
opts         stg-db   -     -   -        -   -      -     -     -
opts         prod-db  -     -   -        -   -      -     -     -
opts         prod-web -     -   -        -   -      -     -     -
opts         qa-db    -     -   -        -   -      -     -     -
opts         db-noenv -     -   -        -   -      -     -     -
opts         webby    -     -   -        -   -      -     -     -
opts         bare     -     -   -        -   -      -     -     -
dev,dbre,opts dev1    +     +   -        -   -      -     +     +
dev,dbre,opts stg-db  +     +   +        -   -      -     +     +
dev,dbre,opts prod-db -     -   +        -   -      -     +     +
dev,dbre,opts prod-web -    -   -        -   -      -     -     -
dev,dbre,opts qa-db   -     -   -        -   -      -     -     -
dev,dbre,opts db-noenv -    -   -        -   -      -     -     -
dev,dbre,opts webby   -     -   -        -   -      -     -     -
dev,dbre,opts bare    -     -   -        -   -      -     -     -
"""


def _parse(grid: str) -> tuple[list[str], list[tuple[str, str, dict[str, bool]]]]:
    header, *rows = [line.split() for line in grid.strip().splitlines()]
    columns = header[2:]
    parsed = []
    for row in rows:
        assert len(row) == len(header), row
        assert set(row[2:]) <= {"+", "-"}, row
        parsed.append(
            (row[0], row[1], {c: v == "+" for c, v in zip(columns, row[2:], strict=True)})
        )
    return columns[:-2], parsed


LOGINS, ROWS = _parse(GRID)
ROLE_SETS = list(dict.fromkeys(roles for roles, _, _ in ROWS))


def _checker(roles: str) -> AccessChecker:
    return AccessChecker([ROLES[name] for name in roles.split(",")], TRAITS)


def test_grid_covers_every_role_set_and_node_once() -> None:
    assert len(ROLE_SETS) >= 5
    assert {name for roles in ROLE_SETS for name in roles.split(",")} == set(ROLES)
    assert sorted((roles, node) for roles, node, _ in ROWS) == sorted(
        (roles, node) for roles in ROLE_SETS for node in NODES
    )


LOGIN_CASES = [
    (roles, node, login, expected[login]) for roles, node, expected in ROWS for login in LOGINS
]


@pytest.mark.parametrize(
    ("roles", "node", "login", "allowed"),
    LOGIN_CASES,
    ids=[f"{r}|{n}|{lg}|{'allow' if a else 'deny'}" for r, n, lg, a in LOGIN_CASES],
)
def test_login_access(roles: str, node: str, login: str, allowed: bool) -> None:
    decision = _checker(roles).login_access(node, NODES[node], login)
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason
        assert "\n" not in decision.reason
        assert repr(node) in decision.reason or repr(login) in decision.reason


@pytest.mark.parametrize(
    ("roles", "node", "expected"),
    ROWS,
    ids=[f"{r}|{n}|{'reach' if e['reach'] else 'no-reach'}" for r, n, e in ROWS],
)
def test_node_access(roles: str, node: str, expected: dict[str, bool]) -> None:
    decision = _checker(roles).node_access(node, NODES[node])
    assert decision.allowed is expected["reach"]
    assert bool(decision) is expected["reach"]
    if not decision:
        assert repr(node) in decision.reason


@pytest.mark.parametrize(
    ("roles", "node", "expected"),
    ROWS,
    ids=[f"{r}|{n}|{'shown' if e['ls'] else 'hidden'}" for r, n, e in ROWS],
)
def test_visible(roles: str, node: str, expected: dict[str, bool]) -> None:
    assert _checker(roles).visible(NODES[node]) is expected["ls"]


def test_deny_reasons_name_the_role_or_the_login() -> None:
    checker = _checker("all,noprod")
    assert checker.node_access("prod-db", NODES["prod-db"]).reason == (
        "node 'prod-db' is denied to you by role 'noprod': see jump ls"
    )
    assert checker.login_access("dev1", NODES["dev1"], "root").reason == (
        "login 'root' is denied to you by your roles: jump status lists yours"
    )


PRINCIPALS = {
    "dev": ["alice", "dev"],
    "all": ["alice", "ubuntu"],  # root denied by the role that allows it
    "rooter": ["root"],
    "rooter,all": ["alice", "ubuntu"],  # one role's deny beats another's allow
    "dbre,web": ["postgres", "www"],
    "dev,dbre,opts": ["alice", "dev", "postgres"],
    "viewer": [],
    "opts": [],
    "noprod": [],
}


@pytest.mark.parametrize(("roles", "logins"), PRINCIPALS.items(), ids=list(PRINCIPALS))
def test_principals(roles: str, logins: list[str]) -> None:
    assert _checker(roles).logins == logins


def test_trait_expands_to_every_login_of_the_user_and_none_without() -> None:
    roles = [ROLES["dev"]]
    assert AccessChecker(roles, traits_of(["alice", "ops"])).logins == ["alice", "dev", "ops"]
    assert AccessChecker(roles, {}).logins == ["dev"]
    assert AccessChecker(roles, {}).login_access("dev1", NODES["dev1"], "alice").allowed is False


OPTION_ROLES = {
    "short": _role("short", options={"max_session_ttl": "1h", "client_idle_timeout": "30m"}),
    "agent": _role("agent", options={"max_session_ttl": "8h", "forward_agent": True}),
    "noport": _role("noport", options={"port_forwarding": False, "client_idle_timeout": "10m"}),
    "expiring": _role("expiring", options={"disconnect_expired_cert": True}),
    "idleoff": _role("idleoff", options={"client_idle_timeout": "0s"}),
}
HOUR = timedelta(hours=1)
# role set: (max_session_ttl, port_forwarding, forward_agent, client_idle_timeout,
# disconnect_expired_cert)
OPTIONS: dict[str, tuple[timedelta, bool, bool, timedelta | None, bool]] = {
    "": (12 * HOUR, False, False, None, False),
    "idleoff": (12 * HOUR, True, False, None, False),
    "short": (HOUR, True, False, timedelta(minutes=30), False),
    "agent": (8 * HOUR, True, True, None, False),
    "short,agent": (HOUR, True, True, timedelta(minutes=30), False),
    "agent,noport": (8 * HOUR, False, True, timedelta(minutes=10), False),
    "short,noport,idleoff": (HOUR, False, False, timedelta(minutes=10), False),
    "agent,expiring": (8 * HOUR, True, True, None, True),
}


@pytest.mark.parametrize(
    ("roles", "expected"), OPTIONS.items(), ids=[k or "no-roles" for k in OPTIONS]
)
def test_options_combine_strictest_except_agent(
    roles: str, expected: tuple[timedelta, bool, bool, timedelta | None, bool]
) -> None:
    checker = AccessChecker([OPTION_ROLES[n] for n in roles.split(",") if n], TRAITS)
    assert (
        checker.max_session_ttl,
        checker.port_forwarding,
        checker.forward_agent,
        checker.client_idle_timeout,
        checker.disconnect_expired_cert,
    ) == expected


NO_SESSION_DELETE = _role(
    "no-session-delete", deny={"rules": [{"resources": ["session"], "verbs": ["delete"]}]}
)
NOT_OWN = _role(
    "not-own",
    deny={
        "rules": [
            {
                "resources": ["session"],
                "verbs": ["read"],
                "where": "contains(session.participants, user.metadata.name)",
            }
        ]
    },
)
RULE_ROLES = {**PRESETS, NO_SESSION_DELETE.name: NO_SESSION_DELETE, NOT_OWN.name: NOT_OWN}
# role set, kind, verb: (allows, allows own, allows_some)
RULES: dict[tuple[str, Kind, Verb], tuple[bool, bool, bool]] = {
    ("admin", Kind.ROLE, Verb.CREATE): (True, True, True),
    ("admin", Kind.LOCK, Verb.DELETE): (True, True, True),
    ("access", Kind.NODE, Verb.LIST): (True, True, True),
    ("access", Kind.NODE, Verb.DELETE): (False, False, False),
    ("access", Kind.SESSION, Verb.READ): (False, True, True),  # own sessions only
    ("access", Kind.USER, Verb.LIST): (False, False, False),
    ("auditor", Kind.SESSION, Verb.READ): (True, True, True),
    ("auditor", Kind.EVENT, Verb.LIST): (True, True, True),
    ("auditor", Kind.NODE, Verb.LIST): (False, False, False),
    ("admin,no-session-delete", Kind.SESSION, Verb.DELETE): (False, False, False),
    ("admin,no-session-delete", Kind.SESSION, Verb.READ): (True, True, True),
    ("auditor,not-own", Kind.SESSION, Verb.READ): (True, False, True),  # not their own
    ("no-session-delete", Kind.SESSION, Verb.LIST): (False, False, False),
}


@pytest.mark.parametrize(
    ("key", "expected"),
    RULES.items(),
    ids=[f"{r}|{k}|{v}" for r, k, v in RULES],
)
def test_rules(key: tuple[str, Kind, Verb], expected: tuple[bool, bool, bool]) -> None:
    roles, kind, verb = key
    checker = AccessChecker([RULE_ROLES[n] for n in roles.split(",")], TRAITS)
    assert (
        checker.allows(kind, verb),
        checker.allows(kind, verb, own=True),
        checker.allows_some(kind, verb),
    ) == expected


API_CALL = Subject(user="alice", user_id="u-1", roles=("dev", "all"))
SESSION = Subject(
    user="alice", user_id="u-1", roles=("dev",), node_names=("n-uuid", "dev1"), login="ubuntu"
)
NAMESAKE = Subject(
    user="alice", user_id="u-2", roles=("dev",), node_names=("dev1",), login="ubuntu"
)
OTHER = Subject(user="bob", user_id="u-3", roles=("all",), node_names=("prod-db",), login="root")
SUBJECTS = {"api-call": API_CALL, "session": SESSION, "namesake": NAMESAKE, "other": OTHER}
# lock target: whether it stops each of api-call, session, namesake, other
LOCKS: dict[str, tuple[dict[str, str], tuple[bool, bool, bool, bool]]] = {
    "user": ({"user": "alice"}, (True, True, True, False)),
    "user_id": ({"user_id": "u-1"}, (True, True, False, False)),
    "removed-user": ({"user": "alice", "user_id": "u-1"}, (True, True, False, False)),
    "role-all": ({"role": "all"}, (True, False, False, True)),
    "role-dev": ({"role": "dev"}, (True, True, True, False)),
    "node-by-name": ({"node": "dev1"}, (False, True, True, False)),
    "node-by-uuid": ({"node": "n-uuid"}, (False, True, False, False)),
    # A hostname's case is no part of it: ``jump ssh dev1`` reaches a node named DEV1 (and
    # back), so a lock naming it either way must stop it.
    "node-by-name-other-case": ({"node": "DEV1"}, (False, True, True, False)),
    "node-by-uuid-other-case": ({"node": "N-UUID"}, (False, True, False, False)),
    "login": ({"login": "root"}, (False, False, False, True)),
    "user-on-node": ({"user": "alice", "node": "dev1"}, (False, True, True, False)),
    "role-and-login": ({"role": "dev", "login": "ubuntu"}, (False, True, True, False)),
    "user-of-nobody": ({"user": "carol"}, (False, False, False, False)),
}
LOCK_CASES = [
    (name, target, subject, expected[i])
    for name, (target, expected) in LOCKS.items()
    for i, subject in enumerate(SUBJECTS)
]


@pytest.mark.parametrize(
    ("target", "subject", "stops"),
    [(t, s, e) for _, t, s, e in LOCK_CASES],
    ids=[f"{n}|{s}|{'stops' if e else 'passes'}" for n, _, s, e in LOCK_CASES],
)
def test_lock_applies(target: dict[str, str], subject: str, stops: bool) -> None:
    assert lock_applies(LockTarget.model_validate(target), SUBJECTS[subject]) is stops


def test_a_node_whose_only_allowed_login_is_denied_is_not_reachable_but_listed() -> None:
    noroot = _role("noroot", deny={"logins": ["root"]})
    checker = AccessChecker([ROLES["rooter"], noroot], TRAITS)
    assert checker.node_access("dev1", NODES["dev1"]).allowed is False
    assert checker.login_access("dev1", NODES["dev1"], "root").allowed is False
    assert checker.visible(NODES["dev1"]) is True
    assert checker.logins == []


# One key's matcher (a list mixing every form) against one node's labels: shown or not.
MATCHERS: dict[str, tuple[dict[str, Any], dict[str, str], bool]] = {
    "list-exact": ({"env": ["prod", "stag*", "^qa-[0-9]+$"]}, {"env": "prod"}, True),
    "list-glob": ({"env": ["prod", "stag*", "^qa-[0-9]+$"]}, {"env": "staging"}, True),
    "list-regex": ({"env": ["prod", "stag*", "^qa-[0-9]+$"]}, {"env": "qa-12"}, True),
    "list-none": ({"env": ["prod", "stag*", "^qa-[0-9]+$"]}, {"env": "qa-x"}, False),
    "exact-not-prefix": ({"env": "prod"}, {"env": "production"}, False),
    "exact-dot-literal": ({"host": "a.b"}, {"host": "axb"}, False),
    "glob-whole-value": ({"host": "web-*"}, {"host": "my-web-1"}, False),
    "regex-whole-value": ({"team": "^db-.*$"}, {"team": "xdb-1"}, False),
    "star-key-exact": ({"*": "prod"}, {"env": "dev", "tier": "prod"}, True),
    "star-key-none": ({"*": "prod"}, {"env": "dev"}, False),
    "star-key-unlabelled": ({"*": "prod"}, {}, False),
    "star-star-unlabelled": ({"*": "*"}, {}, True),
    "key-star-needs-key": ({"env": "*"}, {"team": "x"}, False),
    "key-star-any-value": ({"env": ["*", "never"]}, {"env": ""}, True),
    "every-key": ({"env": "prod", "team": "db*"}, {"env": "prod", "team": "web"}, False),
}


@pytest.mark.parametrize(("node_labels", "labels", "shown"), MATCHERS.values(), ids=list(MATCHERS))
def test_matcher_forms(node_labels: dict[str, Any], labels: dict[str, str], shown: bool) -> None:
    allow = AccessChecker([_role("m", {"logins": ["x"], "node_labels": node_labels})], {})
    deny = AccessChecker([ROLES["all"], _role("d", deny={"node_labels": node_labels})], {})
    assert allow.visible(labels) is shown
    assert deny.visible(labels) is not shown  # the same matcher denies exactly those


def test_an_over_long_label_value_is_not_run_through_expressions() -> None:
    """A node reports its own labels; one value of thousands of characters run through
    ``^.*-.*-.*x$`` would hold the shared worker deciding for every tenant. Past
    ``MAX_MATCHED_VALUE`` characters, expressions and globs are not run: such a value
    matches no allow (the node is not reached by it) and every deny (a node cannot slip
    out of a deny by making its label long); exact values and ``*`` still apply."""
    long = {"env": "a-" * 50_000}

    def allowed_by(matcher: str) -> bool:
        role = _role("r", {"logins": ["x"], "node_labels": {"env": matcher}})
        return AccessChecker([role], {}).visible(long)

    def denied_by(matcher: str) -> bool:
        role = _role("d", deny={"node_labels": {"env": matcher}})
        return not AccessChecker([ROLES["all"], role], {}).visible(long)

    began = time.perf_counter()
    assert allowed_by("^.*-.*-.*x$") is False
    assert allowed_by("^a-.*$") is False
    assert allowed_by("a-*") is False
    assert denied_by("^.*-.*-.*x$") is True
    assert denied_by("a-*") is True
    assert time.perf_counter() - began < 0.5
    assert allowed_by("*") is True
    assert denied_by("prod") is False
    assert denied_by("*") is True


@pytest.mark.parametrize("roles", ROLE_SETS, ids=ROLE_SETS)
def test_one_checker_answers_the_whole_table_twice(roles: str) -> None:
    """A listing asks one checker about thousands of nodes, which keeps what each label
    value gave: the answers stay those of the table, in any order, any number of times."""
    checker = _checker(roles)
    rows = [(node, expected) for r, node, expected in ROWS if r == roles]
    for node, expected in [*rows, *reversed(rows)]:
        assert checker.visible(NODES[node]) is expected["ls"]
        for login in LOGINS:
            assert checker.login_access(node, NODES[node], login).allowed is expected[login]

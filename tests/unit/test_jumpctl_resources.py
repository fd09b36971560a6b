"""``jumpctl get/create/edit/lock`` without a platform: the documents they write (canonical
YAML), what they read back, and every refusal as the one line a person sees."""

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl import documents, edit, kinds, locks, resources
from jumpgate.cli.jumpctl.context import Context
from jumpgate.cli.jumpctl.main import parser
from jumpgate.cli.jumpctl.users import _update
from jumpgate.protocol import models
from jumpgate.protocol.client import Client
from jumpgate.protocol.policy import PRESETS
from jumpgate.protocol.resources import Lock, Role

ROLE = kinds.KINDS["role"]
USER = kinds.KINDS["user"]

STAGING = """\
kind: role
version: v1
metadata:
  name: staging
spec:
  allow:
    logins: ['{{internal.logins}}', ubuntu]
    node_labels: {env: staging, team: [db, web]}
  deny:
    logins: [root]
  options: {max_session_ttl: 8h}
"""

BOB = """\
kind: user
version: v1
metadata: {name: bob}
spec:
  roles: [staging]
  traits: {logins: [ubuntu]}
status: {state: active, created: '2026-12-01T00:00:00Z', lock: ''}
"""


def _role(name: str, revision: str = "") -> Role:
    document = {"kind": "role", "metadata": {"name": name, "revision": revision}}
    return Role.model_validate(document)


def test_get_writes_every_field_in_model_order_without_the_revision() -> None:
    stored = resources.parse_all(STAGING, "f")[0].value
    answered = stored.model_copy(
        update={"metadata": stored.metadata.model_copy(update={"revision": "r-17"})}
    )
    text = documents.dump(ROLE.document(answered))
    assert "revision" not in text
    assert "r-17" not in text
    assert text.splitlines()[:5] == [
        "kind: role",
        "version: v1",
        "metadata:",
        "  name: staging",
        "  description: ''",
    ]
    # defaults are written out, so a file kept from get says everything the role does
    for field in ("deny:", "rules: []", "forward_agent: false", "disconnect_expired_cert: false"):
        assert field in text


def test_canonical_yaml_round_trips_byte_for_byte() -> None:
    written = documents.dump_all(ROLE.document(role) for role in PRESETS.values())
    assert written.count("---\n") == len(PRESETS) - 1
    read = resources.parse_all(written, "presets.yaml")
    assert [p.name for p in read] == list(PRESETS)
    assert documents.dump_all(ROLE.document(p.value) for p in read) == written
    long = STAGING.replace("name: staging", "name: staging\n  description: " + "word " * 80)
    once = documents.dump(ROLE.document(resources.parse_all(long, "f")[0].value))
    assert "  description: " + "word " * 79 + "word\n" in once  # one line, never folded
    assert documents.dump(ROLE.document(resources.parse_all(once, "f")[0].value)) == once


def test_a_user_document_carries_roles_and_logins_and_its_status_is_ignored() -> None:
    info = models.UserInfo(
        name="bob",
        roles=["staging"],
        logins=["ubuntu"],
        status="active",
        created=datetime(2026, 12, 1, tzinfo=UTC),
    )
    shown = documents.dump(USER.document(info))
    assert shown == BOB.replace("metadata: {name: bob}", "metadata:\n  name: bob").replace(
        "  roles: [staging]\n  traits: {logins: [ubuntu]}\nstatus: {state: active, created: "
        "'2026-12-01T00:00:00Z', lock: ''}\n",
        "  roles:\n  - staging\n  traits:\n    logins:\n    - ubuntu\nstatus:\n  state: active\n"
        "  created: '2026-12-01T00:00:00Z'\n  lock: ''\n",
    )
    read = resources.parse_all(shown, "bob.yaml")[0].value
    assert USER.unchanged(info, read)
    other = resources.parse_all(BOB.replace("state: active", "state: locked"), "f")[0].value
    assert USER.unchanged(info, other)  # status is the platform's: what is written is ignored
    more = resources.parse_all(BOB.replace("[ubuntu]", "[ubuntu, deploy]"), "f")[0].value
    assert not USER.unchanged(info, more)
    held = info.model_copy(update={"roles": ["access", "staging"]})
    swapped = resources.parse_all(BOB.replace("[staging]", "[staging, access]"), "f")[0].value
    assert USER.unchanged(held, swapped)
    assert not USER.unchanged(info, swapped)


BAD = [
    (
        STAGING
        + "---\n"
        + STAGING.replace("env: staging", "env: 5").replace("staging\n", "x\n", 1),
        "f.yaml: document 2 (role 'x'): spec.allow.node_labels.env: must be text or a list of "
        "text, not 5",
    ),
    (
        STAGING.replace("env: staging", "env: '^(db$'"),
        "f.yaml: document 1 (role 'staging'): spec.allow.node_labels.env: '^(db$' is not a valid "
        "regular expression (missing ), unterminated subpattern at position 1)",
    ),
    (
        STAGING.replace("team: [db, web]", "team: [db, 7]"),
        "f.yaml: document 1 (role 'staging'): spec.allow.node_labels.team: must be text or a "
        "list of text, not ['db', 7]",
    ),
    (
        "kind: rolle\nmetadata: {name: x}\n",
        "f.yaml: document 1: unknown kind 'rolle': use role, user or lock",
    ),
    ("metadata: {name: x}\n", "f.yaml: document 1: kind is required: use role, user or lock"),
    (
        "kind: node\nmetadata: {name: web-1}\n",
        "f.yaml: document 1 (node 'web-1'): nodes are not made from documents: "
        "use jumpctl nodes add",
    ),
    (
        "kind: token\nmetadata: {name: abc}\n",
        "f.yaml: document 1 (token 'abc'): tokens are not made from documents: "
        "use jumpctl tokens add (or jumpctl nodes add)",
    ),
    (
        STAGING.replace("  deny:", "  denny:"),
        "f.yaml: document 1 (role 'staging'): spec.denny: unknown field: jumpctl get roles "
        "shows the fields a role has",
    ),
    (
        STAGING.replace("8h", "forever"),
        "f.yaml: document 1 (role 'staging'): spec.options.max_session_ttl: invalid duration "
        "'forever': use a number and a unit, e.g. 30s, 5m, 12h",
    ),
    (
        STAGING.replace("version: v1", "version: v7"),  # a Teleport role's version
        "f.yaml: document 1 (role 'staging'): version: 'v7' is not v1: write version: v1 "
        "(the one version of Jumpgate's documents)",
    ),
    (
        "kind: lock\nversion: v1\nspec: {target: {}, message: stop}\n",
        "f.yaml: document 1 (lock): spec.target: a lock needs a target: --user, --role, --node "
        "or --login",
    ),
    (
        BOB.replace("[staging]", "[]"),
        "f.yaml: document 1 (user 'bob'): spec.roles: must list at least 1 (none given)",
    ),
    (
        BOB.replace("[ubuntu]", "[Ubuntu]"),
        "f.yaml: document 1 (user 'bob'): spec.traits.logins[0]: login 'Ubuntu' is not a valid "
        "OS user name: use lowercase letters, digits, _ . -",
    ),
    (
        "- kind: role\n",
        "f.yaml: document 1: must be a mapping with kind, version, metadata "
        "and spec, not a YAML list",
    ),
    (
        "kind: role\nmetadata: {name: [\n",
        "f.yaml: line 3: not valid YAML (expected the node content, but found '<stream end>')",
    ),
    ("---\n---\n", "f.yaml: no documents in it: write one with kind, metadata and spec"),
    (
        STAGING.replace("  deny:", "  allow: {}\n  deny:"),
        "f.yaml: line 9: not valid YAML (key 'allow' is written twice: keep one)",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"),
    BAD,
    ids=[
        "label-a-number",
        "invalid-regex",
        "label-list-with-a-number",
        "unknown-kind",
        "no-kind",
        "node-read-only",
        "token-read-only",
        "unknown-field",
        "bad-duration",
        "teleport-version",
        "lock-no-target",
        "user-no-roles",
        "user-bad-login",
        "not-a-mapping",
        "not-yaml",
        "empty",
        "key-twice",
    ],
)
def test_a_bad_document_is_one_line_naming_the_document_and_field(text: str, message: str) -> None:
    with pytest.raises(CLIError) as refused:
        resources.parse_all(text, "f.yaml")
    assert str(refused.value) == message
    assert "\n" not in str(refused.value)


NONE = resources.Cluster(frozenset(), frozenset())
CLUSTER = resources.Cluster(
    frozenset({"admin", "access", "auditor", "staging"}), frozenset({"bob"})
)


@pytest.mark.parametrize(
    ("text", "cluster", "replace", "message"),
    [
        (
            STAGING,
            CLUSTER,
            False,
            "f: document 1 (role 'staging'): role 'staging' exists already: use jumpctl "
            "create -f to replace it",
        ),
        (
            BOB,
            CLUSTER,
            False,
            "f: document 1 (user 'bob'): user 'bob' exists already: use jumpctl create -f to "
            "change their roles and logins",
        ),
        (
            BOB,
            NONE,
            True,
            "f: document 1 (user 'bob'): spec.roles[0]: no role 'staging' in this cluster: "
            "write it in the file or create it first (jumpctl get roles lists them)",
        ),
        (
            STAGING + "---\n" + STAGING,
            NONE,
            True,
            "f: document 2 (role 'staging'): the same role as document 1: keep one",
        ),
    ],
    ids=["role-exists", "user-exists", "user-role-unknown", "twice"],
)
def test_create_checks_the_file_against_the_cluster_before_sending(
    text: str, cluster: resources.Cluster, replace: bool, message: str
) -> None:
    with pytest.raises(CLIError) as refused:
        resources.plan(resources.parse_all(text, "f"), cluster, replace=replace)
    assert str(refused.value) == message


def test_create_plans_every_document_in_order() -> None:
    lock = "kind: lock\nversion: v1\nspec: {target: {user: eve}, message: incident}\n"
    text = "---\n".join([STAGING, BOB.replace("bob", "carol"), BOB, lock])
    steps = resources.plan(resources.parse_all(text, "f"), CLUSTER, replace=True)
    assert [(s.parsed.kind.name, s.parsed.name, s.exists) for s in steps] == [
        ("role", "staging", True),
        ("user", "carol", False),
        ("user", "bob", True),
        ("lock", "", False),
    ]
    request = steps[3].parsed.value.request()
    assert (request.target.user, request.message, request.ttl_seconds) == ("eve", "incident", None)
    # a user may hold a role the same file makes
    made = resources.plan(resources.parse_all(STAGING + "---\n" + BOB, "f"), NONE, replace=False)
    assert [s.exists for s in made] == [False, False]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: role\n", "role/staging: metadata: is required"),
        ("", "role/staging: no documents in it: write one with kind, metadata and spec"),
        (STAGING + "---\n" + STAGING, "role/staging: 2 documents: keep the one being edited"),
        (
            STAGING.replace("name: staging", "name: prod"),
            "role/staging: metadata.name: stays 'staging' in an edit: for a new role, use "
            "jumpctl create",
        ),
        (
            STAGING.replace("env: staging", "env: '^[$'"),
            "role/staging: spec.allow.node_labels.env: '^[$' is not a valid regular expression "
            "(unterminated character set at position 1)",
        ),
        (
            STAGING.replace("kind: role", "kind: user"),
            "role/staging: kind: must stay role, not 'user'",
        ),
    ],
    ids=["no-metadata", "emptied", "two", "renamed", "bad-regex", "kind-changed"],
)
def test_an_edit_must_stay_one_valid_document_of_its_name(text: str, message: str) -> None:
    with pytest.raises(CLIError) as refused:
        edit.edited(ROLE, "staging", text)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("env", "argv"),
    [
        ({}, ["vi"]),
        ({"EDITOR": "nano"}, ["nano"]),
        ({"EDITOR": "nano", "VISUAL": "code --wait"}, ["code", "--wait"]),
        ({"EDITOR": "'/opt/my editor/bin/ed' -s"}, ["/opt/my editor/bin/ed", "-s"]),
    ],
    ids=["default-vi", "editor", "visual-wins-and-is-split", "quoted-path"],
)
def test_the_editor_comes_from_visual_or_editor(
    env: dict[str, str], argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VISUAL", "EDITOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert edit.editor() == argv


def _lock_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["lock", *argv])


def test_a_lock_needs_a_target() -> None:
    with pytest.raises(CLIError) as refused:
        locks.request(_lock_args("--message", "why"))
    assert str(refused.value) == "a lock needs a target: give --user, --role, --node or --login"
    made = locks.request(_lock_args("--user=bob", "--node=web-1", "--ttl=1h", "--message=m"))
    assert (made.target.user, made.target.node, made.ttl_seconds) == ("bob", "web-1", 3600)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--expires", "tomorrow"],
            "'tomorrow' is not a time: use RFC 3339, e.g. 2027-01-31T18:00:00Z",
        ),
        (
            ["--expires", "2030-01-01T00:00:00"],
            "'2030-01-01T00:00:00' has no zone: end it with Z or +HH:MM",
        ),
        (
            ["--expires", "2020-01-01T00:00:00Z"],
            "'2020-01-01T00:00:00Z' is past: give a time to come, or use --ttl",
        ),
        (["--ttl", "1h", "--expires", "2030-01-01T00:00:00Z"], "not allowed with argument --ttl"),
    ],
    ids=["not-a-time", "no-zone", "past", "both"],
)
def test_a_lock_ends_at_a_time_to_come(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _lock_args("--user=bob", *argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
    soon = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert locks.request(_lock_args("--role=dev", "--expires", soon)).expires is not None


def test_a_lock_document_is_shown_without_revision_and_its_target_as_words() -> None:
    lock = Lock.model_validate(
        {
            "metadata": {"name": "l-1", "revision": "7"},
            "spec": {"target": {"user": "bob", "login": "root"}, "message": "incident"},
        }
    )
    shown = kinds.KINDS["lock"].document(lock)
    assert shown["metadata"] == {"name": "l-1", "description": ""}
    assert kinds.target_text(lock) == "user=bob login=root"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("widgets", "unknown kind 'widgets': use role, user, token, node or lock"),
        ("role/", "name the resource: role/NAME (jumpctl get roles lists them)"),
        ("all/x", "unknown kind 'all': use role, user, token, node or lock"),
    ],
    ids=["unknown", "no-name", "all-is-no-kind-to-remove"],
)
def test_a_resource_reference_is_kind_slash_name(text: str, message: str) -> None:
    with pytest.raises(CLIError) as refused:
        resources.reference(text, need_name=True)
    assert str(refused.value) == message
    assert resources.reference("roles/dba", need_name=True).kind is ROLE
    assert resources.reference("all", need_name=False).kind is None
    with pytest.raises(CLIError) as refused:
        resources.reference("widgets", need_name=False)
    assert str(refused.value) == "unknown kind 'widgets': use role, user, token, node, lock or all"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["edit", "lock/l-1"],
            "locks are not edited here: jumpctl edit takes role/NAME or user/NAME",
        ),
        (["edit", "role"], "name the resource: role/NAME (jumpctl get roles lists them)"),
        (["rm", "all"], "unknown kind 'all': use role, user, token, node or lock"),
    ],
    ids=["edit-a-lock", "edit-without-name", "rm-all"],
)
def test_what_cannot_be_edited_or_removed_is_refused_before_asking_anything(
    argv: list[str], message: str
) -> None:
    args = parser().parse_args(argv)
    # a client that reaches nothing: the refusal comes before any request
    with Client("127.0.0.1:9", insecure=True) as client, pytest.raises(CLIError) as refused:
        args.handler(Context(client, "127.0.0.1:9", True), args)
    assert str(refused.value) == message


def test_users_update_says_what_to_change_before_asking_anything() -> None:
    args = parser().parse_args(["users", "update", "bob"])
    # a client that reaches nothing: the refusal comes before any request
    with Client("127.0.0.1:9", insecure=True) as client, pytest.raises(CLIError) as refused:
        _update(Context(client, "127.0.0.1:9", True), args)
    assert str(refused.value) == "say what to change: --set-roles, --set-logins or both"
    args = parser().parse_args(["users", "update", "bob", "--set-logins", ""])
    assert (args.set_roles, args.set_logins) == (None, [])

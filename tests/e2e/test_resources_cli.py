"""``jumpctl get/create/edit/rm/lock`` as an admin drives them, against ``jumpgate start``:
roles and users as YAML, a user confined by a role, edits refused when bad or stale, and
bad input that is one line and changes nothing."""

import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, LOGIN, Node, Shell, Site, join_command, signup_and_login

pytestmark = pytest.mark.e2e

STAGING = f"""\
kind: role
version: v1
metadata:
  name: staging
  description: staging servers only
spec:
  allow:
    logins: ['{{{{internal.logins}}}}']
    node_labels:
      env: staging
    rules:
    - resources: [node]
      verbs: [list, read]
  deny:
    logins: [root]
---
kind: user
version: v1
metadata:
  name: carol
spec:
  roles: [staging]
  traits:
    logins: [{LOGIN}]
"""


def _join(site: Site, tmp_path: Path, name: str, labels: str) -> Node:
    joining = site.admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    command, env = join_command(joining)
    directory = tmp_path / name
    directory.mkdir()
    argv = [*command, "--data-dir", str(directory), "--nodename", name, "--labels", labels]
    node = Node(directory, argv, env=env)
    node.start()
    node.wait_tunnel()
    return node


@pytest.fixture
def web2(site: Site, tmp_path: Path) -> Iterator[Node]:
    """A second node, labelled env=staging (web-1 is env=prod)."""
    node = _join(site, tmp_path, "web-2", "env=staging")
    yield node
    node.kill(signal.SIGTERM)


def _editor(tmp_path: Path, name: str, script: str) -> str:
    """A small program standing for $EDITOR: ``script`` runs with the file as ``$1``."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nset -e\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _editing(site: Site, editor: str, *argv: str) -> tuple[int, str, str]:
    site.admin.env["VISUAL"] = editor
    try:
        done = site.admin.run("jumpctl", "edit", *argv)
    finally:
        del site.admin.env["VISUAL"]
    return done.code, done.out, done.err


def test_a_role_and_a_user_from_yaml_confine_the_user(
    site: Site, web2: Node, tmp_path: Path
) -> None:
    admin = site.admin
    # nothing to show: YAML output stays empty (a pipe gets no document), and stderr says so
    none = admin.ok("jumpctl", "get", "locks")
    assert (none.out, none.err) == ("", "no locks found\n")
    spec = tmp_path / "staging.yaml"
    spec.write_text(STAGING)
    made = admin.ok("jumpctl", "create", "-f", str(spec)).out
    invite = re.search(r"\n  (jump signup --proxy=\S+ --insecure (\S+))\n", made)
    assert invite is not None, made
    assert made.startswith("Role 'staging' created.\nUser 'carol' invited; the invite expires ")
    carol = Shell(tmp_path / "carol-home")
    signup_and_login(carol, site.cluster, invite[2], "carol")
    listed = carol.ok("jump", "ls", "--format", "json").json()
    assert [(n["nodename"], n["labels"]) for n in listed] == [("web-2", {"env": "staging"})]
    everyone = admin.ok("jump", "ls", "--format", "json").json()
    assert sorted(n["nodename"] for n in everyone) == ["web-1", "web-2"]

    # get > f; create -f f; get again: the same bytes
    kept = tmp_path / "kept.yaml"
    for resource in ("role/staging", "user/carol"):
        first = admin.ok("jumpctl", "get", resource).out
        kept.write_text(first)
        admin.ok("jumpctl", "create", "-f", str(kept))
        assert admin.ok("jumpctl", "get", resource).out == first
    shown = admin.ok("jumpctl", "get", "role/staging").out
    assert "revision" not in shown
    assert shown.startswith("kind: role\nversion: v1\nmetadata:\n  name: staging\n")
    as_json = admin.ok("jumpctl", "get", "user/carol", "--format", "json").json()
    assert as_json["spec"] == {"roles": ["staging"], "traits": {"logins": [LOGIN]}}
    table = admin.ok("jumpctl", "get", "roles", "--format", "text").out
    assert [line.split()[0] for line in table.splitlines()[2:]] == [
        "access",
        "admin",
        "auditor",
        "staging",
    ]

    # edit: a bad document is refused and changes nothing
    bad = _editor(tmp_path, "bad-editor", 'sed -i \'s/env: staging/env: "^[$"/\' "$1"\n')
    code, out, err = _editing(site, bad, "role/staging")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(
        "jumpctl: error: role/staging: spec.allow.node_labels.env: '^[$' is not a valid "
        "regular expression (unterminated character set at position 1); nothing changed, "
        "your edit is kept in "
    )
    assert admin.ok("jumpctl", "get", "role/staging").out == shown
    # an editor that saves nothing: no change, nothing sent
    assert _editing(site, "true", "role/staging") == (0, "role 'staging': no change\n", "")
    # a good edit is sent
    good = _editor(tmp_path, "good-editor", "sed -i 's/env: staging/env: [staging, qa]/' \"$1\"\n")
    assert _editing(site, good, "role/staging") == (0, "Role 'staging' updated.\n", "")
    assert (
        "      env:\n      - staging\n      - qa\n"
        in admin.ok("jumpctl", "get", "role/staging").out
    )
    # a preset is edited as any role (its revision is the platform's word for unchanged)
    preset = _editor(
        tmp_path, "preset-editor", "sed -i 's/^  description: .*/  description: ours now/' \"$1\"\n"
    )
    assert _editing(site, preset, "role/auditor") == (0, "Role 'auditor' updated.\n", "")
    assert "  description: ours now\n" in admin.ok("jumpctl", "get", "role/auditor").out
    # someone else changes the role while it is open: the edit is refused, theirs stays
    theirs = shown.replace("staging servers only", "changed meanwhile")
    (tmp_path / "theirs.yaml").write_text(theirs)
    racing = _editor(
        tmp_path,
        "racing-editor",
        f"{BIN / 'jumpctl'} create -f {tmp_path / 'theirs.yaml'} >/dev/null\n"
        "sed -i 's/staging servers only/mine/' \"$1\"\n",
    )
    code, _, err = _editing(site, racing, "role/staging")
    assert code == 1
    assert err.startswith(
        "jumpctl: error: role 'staging' changed since you opened it: run jumpctl edit again"
    ), err
    assert admin.ok("jumpctl", "get", "role/staging").out == theirs

    # users update, and a user edited as a document
    updated = admin.ok("jumpctl", "users", "update", "carol", "--set-logins", f"{LOGIN},deploy")
    assert updated.out == f"User 'carol' updated: roles staging; logins {LOGIN},deploy.\n"
    more = _editor(
        tmp_path, "user-editor", "sed -i 's/^  - staging$/  - staging\\n  - auditor/' \"$1\"\n"
    )
    assert _editing(site, more, "user/carol") == (0, "User 'carol' updated.\n", "")
    # a user changed while open: refused too
    racing_user = _editor(
        tmp_path,
        "racing-user-editor",
        f"{BIN / 'jumpctl'} users update carol --set-roles staging,auditor,access >/dev/null\n"
        "sed -i 's/^    - deploy$/    - ops/' \"$1\"\n",
    )
    code, _, err = _editing(site, racing_user, "user/carol")
    assert code == 1
    assert err.startswith(
        "jumpctl: error: user 'carol' changed since you opened it: run jumpctl edit again"
    ), err
    admin.ok("jumpctl", "users", "update", "carol", "--set-roles", "staging,auditor")
    assert admin.ok("jumpctl", "get", "user/carol", "--format", "json").json()["spec"] == {
        "roles": ["auditor", "staging"],  # the platform keeps them sorted
        "traits": {"logins": [LOGIN, "deploy"]},
    }

    # locks: made, listed, removed
    locked = admin.ok("jumpctl", "lock", "--user=carol", "--message", "incident 42", "--ttl", "1h")
    lock_id = re.match(r"Lock (\S+) in force on user=carol, until ", locked.out)
    assert lock_id is not None, locked.out
    assert locked.err == ""
    # a node lock on a name no node has: kept (a node may join under it), and said
    typo = admin.ok("jumpctl", "lock", "--node=web-9", "--ttl", "1m")
    assert typo.err == (
        "note: no node 'web-9' has joined: the lock stops one that does (a typo? "
        "jumpctl nodes ls lists them)\n"
    )
    known = admin.ok("jumpctl", "lock", "--node=WEB-2", "--ttl", "1m")
    assert known.err == ""
    for node_lock in (typo, known):
        found = re.match(r"Lock (\S+) in force", node_lock.out)
        assert found is not None, node_lock.out
        admin.ok("jumpctl", "rm", f"lock/{found[1]}")
    listed_locks = admin.ok("jumpctl", "get", "locks", "--format", "json").json()
    assert [(lk["metadata"]["name"], lk["spec"]["target"]["user"]) for lk in listed_locks] == [
        (lock_id[1], "carol")
    ]
    assert listed_locks[0]["spec"]["message"] == "incident 42"
    everything = admin.ok("jumpctl", "get", "all").out
    shown_kinds = re.findall(r"^kind: (\w+)$", everything, re.MULTILINE)
    assert sorted(set(shown_kinds)) == ["lock", "node", "role", "token", "user"]
    assert "Locks:\n" in admin.ok("jumpctl", "get", "all", "--format", "text").out
    node = admin.ok("jumpctl", "get", "node/web-2", "--format", "json").json()
    assert (node["metadata"]["name"], node["spec"]["labels"]) == ("web-2", {"env": "staging"})
    assert admin.ok("jumpctl", "rm", f"lock/{lock_id[1]}").out == f"Lock {lock_id[1]} removed.\n"
    assert admin.ok("jumpctl", "get", "locks").out == ""
    # users lock makes a user lock, which get shows and users unlock lifts
    admin.ok("jumpctl", "users", "lock", "carol", "--message", "away")
    listed_locks = admin.ok("jumpctl", "get", "locks", "--format", "json").json()
    assert [(lk["spec"]["target"]["user"], lk["spec"]["message"]) for lk in listed_locks] == [
        ("carol", "away")
    ]
    admin.ok("jumpctl", "users", "unlock", "carol")
    assert admin.ok("jumpctl", "get", "locks").out == ""


def _state(admin: Shell) -> str:
    """What bad input must not change: the roles, users and locks, as documents."""
    return "".join(admin.ok("jumpctl", "get", kind).out for kind in ("roles", "users", "locks"))


def test_bad_input_is_one_line_and_changes_nothing(site: Site, tmp_path: Path) -> None:
    admin = site.admin
    admin.ok("jumpctl", "users", "add", "bob", "--logins", "ubuntu")
    oncall = "kind: role\nversion: v1\nmetadata: {name: oncall}\n"
    admin.ok("jumpctl", "create", "-", stdin=oncall)
    admin.ok("jumpctl", "users", "add", "dan", "--roles", "oncall,access")
    before = _state(admin)
    good = "kind: role\nversion: v1\nmetadata: {name: good}\n"

    def create(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return admin.fails("jumpctl", "create", str(path))

    cases = [
        (
            create("widget.yaml", "kind: widget\nmetadata: {name: w}\n"),
            f"jumpctl: error: {tmp_path / 'widget.yaml'}: document 1: unknown kind 'widget': "
            "use role, user or lock",
        ),
        (
            admin.fails("jumpctl", "get", "widgets"),
            "jumpctl: error: unknown kind 'widgets': use role, user, token, node, lock or all",
        ),
        (
            create(
                "regex.yaml",
                good.replace("good}", "x}\nspec: {allow: {node_labels: {env: '^(a$'}}}"),
            ),
            f"jumpctl: error: {tmp_path / 'regex.yaml'}: document 1 (role 'x'): "
            "spec.allow.node_labels.env: '^(a$' is not a valid regular expression (missing ), "
            "unterminated subpattern at position 1)",
        ),
        (
            create(
                "number.yaml", good.replace("good}", "x}\nspec: {allow: {node_labels: {env: 5}}}")
            ),
            f"jumpctl: error: {tmp_path / 'number.yaml'}: document 1 (role 'x'): "
            "spec.allow.node_labels.env: must be text or a list of text, not 5",
        ),
        (
            create(
                "half.yaml",
                good + "---\n" + good.replace("good}", "bad}\nspec: {allow: {logins: [Root]}}"),
            ),
            f"jumpctl: error: {tmp_path / 'half.yaml'}: document 2 (role 'bad'): "
            "spec.allow.logins[0]: login 'Root' is not an OS user name or a trait such as "
            "'{{internal.logins}}'",
        ),
        (
            create(
                "user.yaml",
                good + "---\nkind: user\nmetadata: {name: erin}\nspec: {roles: [nosuch]}\n",
            ),
            f"jumpctl: error: {tmp_path / 'user.yaml'}: document 2 (user 'erin'): spec.roles[0]: "
            "no role 'nosuch' in this cluster: write it in the file or create it first "
            "(jumpctl get roles lists them)",
        ),
        (
            admin.fails("jumpctl", "lock", "--message", "no one in particular"),
            "jumpctl: error: a lock needs a target: give --user, --role, --node or --login",
        ),
        (
            admin.fails("jumpctl", "get", "lock/nosuch"),
            "jumpctl: error: lock 'nosuch' not found: see jumpctl get locks",
        ),
        (
            admin.fails("jumpctl", "rm", "lock"),
            "jumpctl: error: name the resource: lock/NAME (jumpctl get locks lists them)",
        ),
        (
            admin.fails("jumpctl", "users", "update", "bob"),
            "jumpctl: error: say what to change: --set-roles, --set-logins or both",
        ),
    ]
    for said, expected in cases:
        assert said == expected
    # the platform's refusals: one line each
    nosuch = (
        "jumpctl: error: role 'nosuch' not found: create it first (jumpctl create -f FILE) "
        "or see jumpctl get roles"
    )
    for argv, message in [
        (
            ("rm", "role/access"),
            "jumpctl: error: role 'access' is a preset and cannot be removed: change it with "
            "jumpctl edit role/access",
        ),
        (
            ("rm", "role/oncall"),
            "jumpctl: error: role 'oncall' is held by dan: take it from them first "
            "(jumpctl users update NAME --set-roles ...)",
        ),
        (("users", "update", "bob", "--set-roles", "nosuch"), nosuch),
        (("users", "add", "erin", "--roles", "nosuch"), nosuch),
    ]:
        assert admin.fails("jumpctl", *argv) == message
    node = "kind: node\nmetadata: {name: web-1}\n"
    assert admin.fails("jumpctl", "create", "-", stdin=node) == (
        "jumpctl: error: stdin: document 1 (node 'web-1'): nodes are not made from documents: "
        "use jumpctl nodes add"
    )
    assert _state(admin) == before

"""Roles over every state store (SQLite, DynamoDB under moto): presets answered unstored,
revision-checked writes that change nothing when refused, and a tenant revision that moves on
every write (docs/decisions/0034)."""

from datetime import UTC, datetime
from typing import Any

import pytest

from jumpgate.control_plane import keys
from jumpgate.control_plane.errors import AlreadyExists, Conflict, InvalidRequest, NotFound
from jumpgate.control_plane.records import UserRecord
from jumpgate.control_plane.roles import PRESET_REVISION, RoleService
from jumpgate.control_plane.store import Store
from jumpgate.protocol.policy import PRESETS
from jumpgate.protocol.resources import Role


def _role(name: str, *, logins: list[str] | None = None, revision: str = "") -> Role:
    document: dict[str, Any] = {
        "metadata": {"name": name, "revision": revision},
        "spec": {"allow": {"logins": logins or ["ubuntu"], "node_labels": {"env": "dev"}}},
    }
    return Role.model_validate(document)


def _user(name: str, roles: list[str]) -> UserRecord:
    return UserRecord(
        name=name, roles=roles, logins=["root"], created=datetime(2026, 1, 1, tzinfo=UTC)
    )


def _without_revision(role: Role) -> Role:
    return role.model_copy(update={"metadata": role.metadata.model_copy(update={"revision": ""})})


def test_presets_listed_without_being_stored(store: Store) -> None:
    roles = RoleService(store)
    listed = roles.list("acme")
    assert [r.name for r in listed] == sorted(PRESETS)
    assert {r.metadata.revision for r in listed} == {PRESET_REVISION}
    assert store.list_all("acme", keys.ROLES) == []
    assert roles.get("acme", "auditor").spec == PRESETS["auditor"].spec
    assert roles.revisions() == {}


def test_create_then_get_and_list(store: Store) -> None:
    roles = RoleService(store)
    created = roles.create("acme", _role("dba", logins=["postgres"]))
    assert created.metadata.revision not in ("", PRESET_REVISION)
    got = roles.get("acme", "dba")
    assert got == created
    assert [r.name for r in roles.list("acme")] == ["access", "admin", "auditor", "dba"]
    assert [r.name for r in roles.list("globex")] == sorted(PRESETS)
    with pytest.raises(NotFound, match="role 'dba' not found: see jumpctl get roles"):
        roles.get("globex", "dba")


@pytest.mark.parametrize(
    ("name", "words"),
    [("dba", "exists already: replace it"), ("access", r"exists already \(a preset\)")],
    ids=["existing-name", "preset-name"],
)
def test_create_of_a_taken_name_is_refused_and_changes_nothing(
    store: Store, name: str, words: str
) -> None:
    roles = RoleService(store)
    roles.create("acme", _role("dba", logins=["postgres"]))
    before, revision = roles.get("acme", name), roles.revisions()
    with pytest.raises(AlreadyExists, match=words):
        roles.create("acme", _role(name, logins=["hacker"]))
    assert roles.get("acme", name) == before
    assert roles.revisions() == revision


def test_put_with_current_revision_replaces(store: Store) -> None:
    roles = RoleService(store)
    first = roles.create("acme", _role("dba", logins=["postgres"]))
    second, created = roles.put(
        "acme", _role("dba", logins=["mysql"], revision=first.metadata.revision)
    )
    assert created is False
    assert second.metadata.revision != first.metadata.revision
    assert roles.get("acme", "dba").spec.allow.logins == ["mysql"]
    third, _ = roles.put("acme", _role("dba", logins=["oracle"]))  # no revision: overwrite
    assert roles.get("acme", "dba") == third


def test_put_with_stale_revision_is_refused_and_changes_nothing(store: Store) -> None:
    roles = RoleService(store)
    first = roles.create("acme", _role("dba", logins=["postgres"]))
    second, _ = roles.put("acme", _role("dba", logins=["mysql"], revision=first.metadata.revision))
    revision = roles.revisions()
    with pytest.raises(Conflict, match="changed since you read it: read it again"):
        roles.put("acme", _role("dba", logins=["oracle"], revision=first.metadata.revision))
    assert roles.get("acme", "dba") == second
    assert roles.revisions() == revision


def test_put_naming_a_revision_of_a_removed_role_is_refused(store: Store) -> None:
    roles = RoleService(store)
    first = roles.create("acme", _role("dba"))
    roles.remove("acme", "dba", [])
    with pytest.raises(Conflict, match="removed since you read it"):
        roles.put("acme", _role("dba", revision=first.metadata.revision))
    with pytest.raises(NotFound):
        roles.get("acme", "dba")


def test_preset_changed_is_listed_with_its_new_revision(store: Store) -> None:
    roles = RoleService(store)
    preset = roles.get("acme", "access")
    changed = preset.model_copy(update={"spec": _role("access", logins=["ubuntu"]).spec})
    put, created = roles.put("acme", changed)
    assert created is False  # a preset exists already, stored or not
    assert put.metadata.revision not in ("", PRESET_REVISION)
    listed = {r.name: r for r in roles.list("acme")}
    assert listed["access"] == put
    assert listed["access"].spec.allow.logins == ["ubuntu"]
    assert listed["admin"].metadata.revision == PRESET_REVISION
    assert roles.get("globex", "access").metadata.revision == PRESET_REVISION
    with pytest.raises(Conflict):  # the preset revision read before is stale now
        roles.put("acme", changed)


@pytest.mark.parametrize("name", sorted(PRESETS), ids=sorted(PRESETS))
def test_presets_cannot_be_removed(store: Store, name: str) -> None:
    roles = RoleService(store)
    with pytest.raises(InvalidRequest, match=f"role '{name}' is a preset and cannot be removed"):
        roles.remove("acme", name, [])
    assert roles.get("acme", name).metadata.revision == PRESET_REVISION


def test_a_held_role_cannot_be_removed(store: Store) -> None:
    roles = RoleService(store)
    dba = roles.create("acme", _role("dba"))
    users = [_user(f"u{n}", ["access", "dba"]) for n in range(7)] + [_user("x", ["access"])]
    with pytest.raises(InvalidRequest, match=r"held by u0, u1, u2, u3, u4 and 2 more: take it"):
        roles.remove("acme", "dba", users)
    assert roles.get("acme", "dba") == dba


def test_remove(store: Store) -> None:
    roles = RoleService(store)
    roles.create("acme", _role("dba"))
    roles.create("globex", _role("dba"))
    roles.remove("acme", "dba", [_user("x", ["access"])])
    with pytest.raises(NotFound):
        roles.get("acme", "dba")
    assert roles.get("globex", "dba").name == "dba"
    with pytest.raises(NotFound, match="role 'dba' not found"):
        roles.remove("acme", "dba", [])


def test_revisions_move_on_every_write_and_per_tenant(store: Store) -> None:
    roles = RoleService(store)
    seen = [roles.revisions().get("acme")]
    first = roles.create("acme", _role("dba"))
    seen.append(roles.revisions()["acme"])
    roles.put("acme", _role("dba", logins=["mysql"], revision=first.metadata.revision))
    seen.append(roles.revisions()["acme"])
    roles.put("acme", _without_revision(PRESETS["auditor"]))
    seen.append(roles.revisions()["acme"])
    roles.remove("acme", "dba", [])
    seen.append(roles.revisions()["acme"])
    assert seen[0] is None
    assert len(set(seen)) == len(seen)
    assert "globex" not in roles.revisions()
    roles.create("globex", _role("web"))
    assert roles.revisions()["acme"] == seen[-1]


def test_resolve_leaves_out_names_with_no_role(store: Store) -> None:
    roles = RoleService(store)
    roles.create("acme", _role("dba", logins=["postgres"]))
    for names in (["dba", "gone"], ["access", "dba", "gone", "auditor"]):
        assert [r.name for r in roles.resolve("acme", names)] == [n for n in names if n != "gone"]
    checker = roles.checker("acme", _user("bob", ["dba", "gone"]))
    assert checker.logins == ["postgres"]
    assert roles.missing("acme", ["dba", "gone", "admin"]) == ["gone"]

"""One suite for every state store: SQLite and DynamoDB (under moto) pass the same cases."""

import threading
from datetime import timedelta

import pytest

from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.errors import InvalidRequest
from jumpgate.control_plane.store import PLATFORM, CompareAndSwap, Create, Delete, Put, Store
from jumpgate.control_plane.store.base import (
    AtomicWriteFailed,
    KeyExists,
    KeyNotFound,
    RevisionMismatch,
)


def test_get_absent_key_is_not_found(store: Store) -> None:
    with pytest.raises(KeyNotFound):
        store.get("acme", "users/alice")


def test_put_then_get_returns_value_and_revision(store: Store) -> None:
    written = store.put("acme", "users/alice", b"v1")
    got = store.get("acme", "users/alice")
    assert got.value == b"v1"
    assert got.revision == written.revision
    assert store.put("acme", "users/alice", b"v2").revision != written.revision


def test_tenants_do_not_see_each_others_keys(store: Store) -> None:
    store.put("acme", "users/alice", b"a")
    with pytest.raises(KeyNotFound):
        store.get("globex", "users/alice")
    assert store.list("globex", "users/").items == []
    store.put(PLATFORM, "tenants/acme", b"t")
    assert [i.key for i in store.list("acme", "").items] == ["users/alice"]


def test_create_refuses_present_key(store: Store) -> None:
    store.create("acme", "k", b"1")
    with pytest.raises(KeyExists):
        store.create("acme", "k", b"2")
    assert store.get("acme", "k").value == b"1"


def test_create_succeeds_over_expired_item(store: Store, clock: ManualClock) -> None:
    store.create("acme", "k", b"old", expires=clock.now() + timedelta(seconds=10))
    clock.advance(timedelta(seconds=11))
    store.create("acme", "k", b"new")
    assert store.get("acme", "k").value == b"new"


def test_compare_and_swap_needs_current_revision(store: Store) -> None:
    first = store.create("acme", "k", b"1")
    second = store.compare_and_swap("acme", "k", b"2", revision=first.revision)
    with pytest.raises(RevisionMismatch):
        store.compare_and_swap("acme", "k", b"3", revision=first.revision)
    assert store.get("acme", "k").revision == second.revision
    with pytest.raises(KeyNotFound):
        store.compare_and_swap("acme", "absent", b"x", revision=first.revision)


def test_delete(store: Store) -> None:
    item = store.put("acme", "k", b"1")
    with pytest.raises(RevisionMismatch):
        store.delete("acme", "k", revision="stale")
    store.delete("acme", "k", revision=item.revision)
    with pytest.raises(KeyNotFound):
        store.get("acme", "k")
    with pytest.raises(KeyNotFound):
        store.delete("acme", "k")


def test_expired_items_are_absent_before_any_sweep(store: Store, clock: ManualClock) -> None:
    expires = clock.now() + timedelta(minutes=5)
    store.put("acme", "tokens/a", b"a", expires=expires)
    store.put("acme", "tokens/b", b"b")
    assert store.get("acme", "tokens/a").expires == expires
    clock.advance(timedelta(minutes=4, seconds=59))
    assert store.get("acme", "tokens/a").value == b"a"
    clock.advance(timedelta(seconds=1))
    with pytest.raises(KeyNotFound):
        store.get("acme", "tokens/a")
    assert [i.key for i in store.list("acme", "tokens/").items] == ["tokens/b"]
    with pytest.raises(KeyNotFound):
        store.delete("acme", "tokens/a")
    with pytest.raises(KeyNotFound):
        store.compare_and_swap("acme", "tokens/a", b"x", revision="any")


def test_list_paginates_past_one_page_in_key_order(store: Store, clock: ManualClock) -> None:
    for n in range(25):
        store.put("acme", f"nodes/{n:03d}", str(n).encode())
    store.put("acme", "nodes/010", b"gone", expires=clock.now() + timedelta(seconds=1))
    store.put("acme", "nodesX", b"not under nodes/")
    clock.advance(timedelta(seconds=2))
    keys: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list("acme", "nodes/", limit=7, cursor=cursor)
        assert len(page.items) <= 7
        keys.extend(i.key for i in page.items)
        pages += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    expected = [f"nodes/{n:03d}" for n in range(25) if n != 10]
    assert keys == expected
    assert pages == 4
    assert [i.key for i in store.list_all("acme", "nodes/")] == expected


def test_list_refuses_cursor_of_another_prefix(store: Store) -> None:
    for n in range(3):
        store.put("acme", f"users/{n}", b"")
    cursor = store.list("acme", "users/", limit=1).cursor
    assert cursor is not None
    with pytest.raises(InvalidRequest):
        store.list("acme", "tokens/", cursor=cursor)


@pytest.mark.parametrize(
    "key", ["../x", "a//b", "a/../b", "/abs", "", "a b", "a/./b"], ids=lambda k: repr(k)
)
def test_keys_that_could_escape_are_refused(store: Store, key: str) -> None:
    with pytest.raises(InvalidRequest):
        store.put("acme", key, b"")


def test_invalid_tenant_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        store.put("Acme!", "k", b"")


def test_atomic_write_applies_all(store: Store) -> None:
    a = store.put("acme", "a", b"1")
    store.put("acme", "b", b"1")
    store.atomic_write(
        "acme",
        [
            CompareAndSwap("a", b"2", a.revision),
            Delete("b"),
            Create("c", b"3"),
            Put("d", b"4"),
        ],
    )
    assert store.get("acme", "a").value == b"2"
    assert store.get("acme", "c").value == b"3"
    assert store.get("acme", "d").value == b"4"
    with pytest.raises(KeyNotFound):
        store.get("acme", "b")


def test_atomic_write_applies_none_when_a_condition_fails(store: Store) -> None:
    store.put("acme", "a", b"1")
    store.put("acme", "exists", b"1")
    with pytest.raises(AtomicWriteFailed, match="exists"):
        store.atomic_write("acme", [Put("a", b"changed"), Create("exists", b"2")])
    assert store.get("acme", "a").value == b"1"
    assert store.get("acme", "exists").value == b"1"


def test_atomic_write_refuses_duplicate_keys(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        store.atomic_write("acme", [Put("a", b"1"), Put("a", b"2")])


def test_compare_and_swap_race_has_exactly_one_winner(store: Store) -> None:
    base = store.put("acme", "counter", b"0")
    contenders = 8
    barrier = threading.Barrier(contenders)
    wins: list[int] = []
    losses: list[int] = []

    def contend(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            store.compare_and_swap("acme", "counter", str(n).encode(), revision=base.revision)
        except RevisionMismatch:
            losses.append(n)
        else:
            wins.append(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(wins) == 1, (wins, losses)
    assert len(losses) == contenders - 1
    assert store.get("acme", "counter").value == str(wins[0]).encode()

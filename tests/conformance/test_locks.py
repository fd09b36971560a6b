"""Locks over every state store (SQLite, DynamoDB under moto): in force from creation until
they expire (absent at once, whatever the store's sweep) or are removed; one feed for every
proxy; a tenant sees only its own (docs/decisions/0034)."""

from datetime import timedelta

import pytest

from jumpgate.control_plane import keys
from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.errors import InvalidRequest, NotFound
from jumpgate.control_plane.locks import LockService, message_of
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.protocol.policy import Subject
from jumpgate.protocol.resources import MAX_SESSION_TTL, LockTarget

ALICE_SESSION = Subject(
    user="alice", user_id="u-1", roles=("access",), node_names=("n-1", "web1"), login="ubuntu"
)


def _feed(locks: LockService) -> list[tuple[str, str]]:
    return sorted((t.tenant, t.lock.name) for t in locks.feed())


def test_create_with_ttl_then_list_match_and_feed(store: Store, clock: ManualClock) -> None:
    locks = LockService(store, clock)
    lock = locks.create(
        "acme",
        LockTarget(user="alice"),
        message="  on   leave ",
        ttl=timedelta(hours=1),
        created_by="bob",
    )
    assert lock.spec.expires == clock.now() + timedelta(hours=1)
    assert lock.spec.message == "on leave"
    assert locks.list("acme") == [lock]
    assert locks.matching("acme", ALICE_SESSION) == lock
    assert _feed(locks) == [("acme", lock.name)]
    assert message_of(lock) == "user 'alice' is locked (on leave): ask a tenant admin"


def test_expired_lock_is_absent_at_once_before_any_sweep(store: Store, clock: ManualClock) -> None:
    locks = LockService(store, clock)
    short = locks.create("acme", LockTarget(user="alice"), ttl=timedelta(minutes=5))
    lasting = locks.create("acme", LockTarget(login="root"))
    clock.advance(timedelta(minutes=5))
    assert locks.list("acme") == [lasting]
    assert locks.matching("acme", ALICE_SESSION) is None
    assert _feed(locks) == [("acme", lasting.name)]
    with pytest.raises(NotFound, match=f"lock {short.name!r} not found: see jumpctl get locks"):
        locks.remove("acme", short.name)


def test_remove_lifts_the_lock(store: Store, clock: ManualClock) -> None:
    locks = LockService(store, clock)
    lock = locks.create("acme", LockTarget(node="web1"))
    assert locks.matching("acme", ALICE_SESSION) == lock
    assert locks.remove("acme", lock.name) == lock
    assert locks.list("acme") == []
    assert locks.matching("acme", ALICE_SESSION) is None
    assert locks.feed() == []
    with pytest.raises(NotFound):
        locks.remove("acme", lock.name)


def test_feed_answers_every_tenant_and_each_tenant_only_its_own(
    store: Store, clock: ManualClock
) -> None:
    locks = LockService(store, clock)
    acme = locks.create("acme", LockTarget(user="alice"))
    globex = locks.create("globex", LockTarget(user="alice"))
    # a tenant whose name begins with another's reads none of the other's locks
    acme2 = locks.create("acme2", LockTarget(role="access"))
    assert _feed(locks) == sorted(
        [("acme", acme.name), ("globex", globex.name), ("acme2", acme2.name)]
    )
    assert locks.list("acme") == [acme]
    assert locks.list("globex") == [globex]
    assert locks.list("acme2") == [acme2]
    assert locks.list("initech") == []
    assert locks.matching("initech", ALICE_SESSION) is None
    assert locks.matching("acme", ALICE_SESSION) == acme
    # another tenant's lock cannot be removed by naming its id
    with pytest.raises(NotFound):
        locks.remove("acme", globex.name)
    assert locks.list("globex") == [globex]


def test_locks_are_stored_in_the_platform_scope_under_their_tenant(
    store: Store, clock: ManualClock
) -> None:
    locks = LockService(store, clock)
    lock = locks.create("acme", LockTarget(user="alice"))
    assert [i.key for i in store.list_all(PLATFORM, keys.LOCKS)] == [f"locks/acme/{lock.name}"]
    assert store.list_all("acme", "") == []


def test_user_removed_lock_matches_only_that_user_id(store: Store, clock: ManualClock) -> None:
    locks = LockService(store, clock)
    lock = locks.user_removed("acme", "alice", "u-1", by="bob")
    assert lock.spec.target == LockTarget(user="alice", user_id="u-1")
    assert lock.spec.expires == clock.now() + MAX_SESSION_TTL
    assert lock.spec.created_by == "bob"
    assert locks.matching("acme", ALICE_SESSION) == lock
    namesake = Subject(user="alice", user_id="u-2", node_names=("web1",), login="ubuntu")
    assert locks.matching("acme", namesake) is None
    assert locks.matching("acme", Subject(user="alice", user_id="u-1")) == lock  # API call
    clock.advance(MAX_SESSION_TTL)
    assert locks.matching("acme", ALICE_SESSION) is None


@pytest.mark.parametrize(
    ("ttl", "expires_in", "words"),
    [
        (timedelta(hours=1), timedelta(hours=1), "not both"),
        (None, timedelta(seconds=0), "expiry is in the past"),
        (None, -timedelta(minutes=1), "expiry is in the past"),
    ],
    ids=["ttl-and-expires", "expires-now", "expires-past"],
)
def test_refused_lock_creates_nothing(
    store: Store,
    clock: ManualClock,
    ttl: timedelta | None,
    expires_in: timedelta,
    words: str,
) -> None:
    locks = LockService(store, clock)
    with pytest.raises(InvalidRequest, match=words):
        locks.create("acme", LockTarget(user="alice"), ttl=ttl, expires=clock.now() + expires_in)
    assert locks.list("acme") == []
    assert locks.feed() == []

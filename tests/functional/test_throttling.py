"""DynamoDB throttling against moto's server answering as DynamoDB does when a table sheds
load: retried with backoff, logged and counted every time, and an error when it does not
pass (teleport#6140: never swallowed, never a silent stall)."""

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jumpgate.control_plane.audit.base import Query
from jumpgate.control_plane.audit.dynamodb import DynamoDBAuditStore
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.errors import StoreUnavailable
from jumpgate.control_plane.store import Create, Put, throttle
from jumpgate.control_plane.store.dynamodb import DynamoDBStore, ensure_table
from jumpgate.protocol.audit import AuditEvent, EventType
from tests.support import Fault, SwitchedMoto, free_port

REGION = "us-east-1"
THROTTLED_CODE = "ProvisionedThroughputExceededException"
THROTTLED: Fault = (
    "400 Bad Request",
    "application/x-amz-json-1.0",
    json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "The level of configured provisioned throughput for the table was "
            "exceeded. Consider increasing your provisioning level with the UpdateTable API.",
        }
    ).encode(),
)


def dynamodb_throttled(times: int | None) -> Callable[[dict[str, Any]], Fault | None]:
    """Throttle the next ``times`` DynamoDB requests (``None``: all of them)."""
    left = [times]

    def fault(environ: dict[str, Any]) -> Fault | None:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return None
        if left[0] is None:
            return THROTTLED
        if left[0] <= 0:
            return None
        left[0] -= 1
        return THROTTLED

    return fault


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[SwitchedMoto]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    server = SwitchedMoto(free_port())
    server.start()
    server.reset()
    ensure_table("jg-state", REGION, server.url)
    ensure_audit_table("jg-audit", REGION, server.url)
    yield server
    server.stop()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "dynamodb throttled"]


def test_throttled_calls_are_retried_logged_and_counted(
    moto: SwitchedMoto, caplog: pytest.LogCaptureFixture
) -> None:
    store = DynamoDBStore("jg-state", region=REGION, host=moto.url)
    before = throttle.counts["jg-state"]
    caplog.set_level(logging.WARNING, logger="jumpgate.control_plane.store.throttle")

    moto.fault = dynamodb_throttled(3)
    store.put("acme", "users/alice", b"1")
    moto.fault = dynamodb_throttled(2)
    assert store.get("acme", "users/alice").value == b"1"
    moto.fault = dynamodb_throttled(2)
    store.atomic_write("acme", [Create("users/bob", b"2"), Put("users/alice", b"3")])
    moto.fault = dynamodb_throttled(1)
    assert [i.key for i in store.list("acme", "users/").items] == ["users/alice", "users/bob"]

    assert moto.faults == 8
    assert throttle.counts["jg-state"] - before == 8
    seen = [(r.operation, r.attempt, r.code) for r in _warnings(caplog)]  # type: ignore[attr-defined]
    assert seen[:3] == [("put", attempt, THROTTLED_CODE) for attempt in (1, 2, 3)]
    assert [op for op, _, _ in seen[3:]] == [
        "get",
        "get",
        "transact_write",
        "transact_write",
        "query",
    ]
    assert all(r.table == "jg-state" for r in _warnings(caplog))  # type: ignore[attr-defined]


def test_a_table_that_stays_throttled_is_an_error_not_a_silence(
    moto: SwitchedMoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DynamoDBStore("jg-state", region=REGION, host=moto.url)
    store.put("acme", "users/alice", b"1")
    waits: list[float] = []
    # the backoff, seen and not slept
    monkeypatch.setattr("jumpgate.control_plane.store.throttle.sleep", waits.append)
    moto.fault = dynamodb_throttled(None)
    for call in (
        lambda: store.put("acme", "users/alice", b"2"),
        lambda: store.create("acme", "users/carol", b"2"),
        lambda: store.list("acme", "users/"),
        lambda: store.atomic_write("acme", [Put("users/alice", b"2")]),
    ):
        with pytest.raises(StoreUnavailable, match=f"{THROTTLED_CODE} on jg-state"):
            call()
    assert moto.faults == 4 * throttle.ATTEMPTS
    assert len(waits) == 4 * (throttle.ATTEMPTS - 1)  # a wait between attempts, none after
    caps = [min(throttle.CAP_SECONDS, throttle.BASE_SECONDS * 2**a) for a in range(1, 6)] * 4
    assert all(0 <= wait <= cap for wait, cap in zip(waits, caps, strict=True))
    moto.fault = None
    assert store.get("acme", "users/alice").value == b"1"  # nothing was half-written


def test_the_audit_table_is_retried_too(moto: SwitchedMoto) -> None:
    audit = DynamoDBAuditStore("jg-audit", region=REGION, host=moto.url)
    now = datetime.now(UTC)
    event = AuditEvent(
        id="0" * 32, type=EventType.USER_LOGIN, code="T1000I", tenant="acme", time=now, user="alice"
    )
    later = now + timedelta(days=365)
    moto.fault = dynamodb_throttled(2)
    audit.append(event, expires=later)
    moto.fault = dynamodb_throttled(2)
    page = audit.search(Query(tenant="acme", since=now - timedelta(hours=1), until=later))
    assert [e.id for e in page.events] == [event.id]
    assert moto.faults == 4
    moto.fault = dynamodb_throttled(None)
    with pytest.raises(StoreUnavailable, match="on jg-audit"):
        audit.append(event, expires=later)

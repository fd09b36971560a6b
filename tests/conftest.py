"""Fixtures shared by every test level."""

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jumpgate.control_plane.audit.base import AuditStore
from jumpgate.control_plane.audit.dynamodb import DynamoDBAuditStore
from jumpgate.control_plane.audit.dynamodb import ensure_table as ensure_audit_table
from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.clock import ManualClock
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.recordings.s3 import S3RecordingStore, ensure_bucket
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.store.dynamodb import DynamoDBStore, ensure_table
from jumpgate.control_plane.store.sqlite import SQLiteStore
from tests.net.parity_report import (  # the sshd parity suite's closing count
    pytest_runtest_logreport,
    pytest_terminal_summary,
)

# Offline AWS: moto answers every call; these keep botocore from looking for real credentials.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
os.environ.pop("AWS_PROFILE", None)

__all__ = ["pytest_runtest_logreport", "pytest_terminal_summary"]


@pytest.fixture
def clock() -> ManualClock:
    """Time that moves only when a test moves it."""
    return ManualClock()


def atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make in-process moto answer one request at a time, as DynamoDB applies each request
    atomically: moto checks a condition and then writes, with no lock between, so two threads'
    conditional writes could both pass (a CI run of the compare-and-swap race saw two
    winners). A write without its condition still lets every thread win."""
    from moto.core.botocore_stubber import BotocoreStubber

    one_at_a_time = threading.Lock()
    process = BotocoreStubber.process_request

    def atomic(self: BotocoreStubber, request: Any) -> Any:
        with one_at_a_time:
            return process(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", atomic)


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Store]:
    """Each state store implementation in turn: SQLite, then DynamoDB under moto."""
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "state.db", clock=clock)
        yield sqlite
        sqlite.close()
        return
    from moto import mock_aws

    atomic_requests(monkeypatch)
    with mock_aws():
        ensure_table("jumpgate-state", "us-east-1")
        yield DynamoDBStore("jumpgate-state", region="us-east-1", clock=clock)


@pytest.fixture(params=["sqlite", "dynamodb"])
def audit_store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AuditStore]:
    """Each audit store in turn: SQLite, then DynamoDB under moto."""
    if request.param == "sqlite":
        sqlite = SQLiteAuditStore(tmp_path / "audit.db", clock=clock)
        yield sqlite
        sqlite.close()
        return
    from moto import mock_aws

    atomic_requests(monkeypatch)
    with mock_aws():
        yield _dynamodb_audit(clock)


@pytest.fixture
def paired_audit(store: Store, tmp_path: Path, clock: ManualClock) -> Iterator[AuditStore]:
    """The audit store of the same kind as ``store`` (inside the same moto, for DynamoDB)."""
    if isinstance(store, SQLiteStore):
        sqlite = SQLiteAuditStore(tmp_path / "audit.db", clock=clock)
        yield sqlite
        sqlite.close()
        return
    yield _dynamodb_audit(clock)


def _dynamodb_audit(clock: ManualClock) -> AuditStore:
    """The DynamoDB audit store on a fresh table (call inside ``mock_aws``)."""
    ensure_audit_table("jumpgate-audit", "us-east-1")
    return DynamoDBAuditStore("jumpgate-audit", region="us-east-1", clock=clock)


RECORDINGS_BUCKET = "jumpgate-recordings"


@pytest.fixture(params=["local", "s3"])
def recording_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordingStore]:
    """Each recordings store in turn: local files, then S3 under moto."""
    if request.param == "local":
        yield LocalRecordingStore(tmp_path / "recordings")
        return
    from moto import mock_aws

    with mock_aws():
        yield s3_recordings()


@pytest.fixture
def paired_recordings(store: Store, tmp_path: Path) -> RecordingStore:
    """The recordings store of the same kind as ``store``: files beside SQLite, S3 beside
    DynamoDB (inside the same moto)."""
    if isinstance(store, SQLiteStore):
        return LocalRecordingStore(tmp_path / "recordings")
    return s3_recordings()


def s3_recordings() -> RecordingStore:
    uri = f"s3://{RECORDINGS_BUCKET}/sessions?region=us-east-1"
    ensure_bucket(uri)
    return S3RecordingStore.from_uri(uri)

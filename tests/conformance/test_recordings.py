"""One suite over every recordings store: local files and S3 (moto)."""

import time
import uuid
from datetime import UTC, datetime

import pytest
from moto import mock_aws

from jumpgate.control_plane import errors
from jumpgate.control_plane.recordings.base import RecordingStore
from jumpgate.control_plane.recordings.s3 import MIN_PART, S3RecordingStore
from jumpgate.protocol import recording
from jumpgate.protocol.recording import Manifest, PartInfo, RecordingMeta, SessionEnd
from tests.conftest import s3_recordings
from tests.support import gzip_part


def _meta(session_id: str, server_id: str = "node-1") -> RecordingMeta:
    return RecordingMeta(
        session_id=session_id, kind="shell", started=datetime.now(UTC), server_id=server_id
    )


def _parts(session_id: str, payloads: list[bytes]) -> list[tuple[PartInfo, bytes]]:
    made, previous = [], recording.genesis(session_id)
    for index, payload in enumerate(payloads, start=1):
        data = gzip_part(payload)
        info = recording.part_info(index, data, previous)
        made.append((info, data))
        previous = info.chain
    return made


def _manifest(tenant: str, meta: RecordingMeta, parts: list[PartInfo]) -> Manifest:
    end = SessionEnd(ended=datetime.now(UTC), exit_code=0)
    return Manifest(tenant=tenant, meta=meta, end=end, parts=parts)


def test_meta_is_kept_by_its_first_writer(recording_store: RecordingStore) -> None:
    sid = str(uuid.uuid4())
    with pytest.raises(errors.NotFound):
        recording_store.get_meta("acme", sid)
    assert recording_store.put_meta("acme", _meta(sid)).server_id == "node-1"
    assert recording_store.put_meta("acme", _meta(sid, "node-2")).server_id == "node-1"
    assert recording_store.get_meta("acme", sid).server_id == "node-1"


def test_parts_are_immutable_listed_in_order_and_read_back(
    recording_store: RecordingStore,
) -> None:
    sid = str(uuid.uuid4())
    recording_store.put_meta("acme", _meta(sid))
    parts = _parts(sid, [b"one", b"two", b"three"])
    for info, data in reversed(parts):
        recording_store.put_part("acme", sid, info, data)
    recording_store.put_part("acme", sid, parts[0][0], parts[0][1])  # a resumed upload
    assert recording_store.parts("acme", sid) == [info for info, _ in parts]
    other = _parts(sid, [b"not one"])[0]
    with pytest.raises(errors.Conflict):
        recording_store.put_part("acme", sid, other[0], other[1])
    for info, data in parts:
        assert recording_store.get_part("acme", sid, info) == data


def test_manifest_completes_and_parts_stay_readable(recording_store: RecordingStore) -> None:
    sid = str(uuid.uuid4())
    meta = recording_store.put_meta("acme", _meta(sid))
    # big enough that S3 assembles more than one multipart part
    payloads = [bytes(range(256)) * (MIN_PART // 256 // 2 + 1) for _ in range(3)]
    parts = [(i, d) for i, d in _parts(sid, payloads)]
    for info, data in parts:
        recording_store.put_part("acme", sid, info, data)
    assert list(recording_store.unfinished()) == [("acme", sid)]
    recording_store.put_manifest("acme", _manifest("acme", meta, [i for i, _ in parts]))
    assert list(recording_store.unfinished()) == []
    stored = recording_store.get_manifest("acme", sid)
    assert stored is not None
    assert stored.parts == [info for info, _ in parts]
    for info, data in parts:
        assert recording_store.get_part("acme", sid, info) == data


def test_tenants_are_apart(recording_store: RecordingStore) -> None:
    sid = str(uuid.uuid4())
    recording_store.put_meta("acme", _meta(sid))
    [(info, data)] = _parts(sid, [b"secret"])
    recording_store.put_part("acme", sid, info, data)
    with pytest.raises(errors.NotFound):
        recording_store.get_meta("globex", sid)
    assert recording_store.parts("globex", sid) == []
    with pytest.raises(errors.NotFound):
        recording_store.get_part("globex", sid, info)
    assert recording_store.get_manifest("globex", sid) is None


@pytest.mark.parametrize(
    ("tenant", "session_id"),
    [("acme", "../etc"), ("acme", "x" * 40), ("../acme", str(uuid.uuid4())), ("ACME", "a" * 32)],
    ids=["dotdot-session", "long-session", "dotdot-tenant", "upper-tenant"],
)
def test_bad_names_are_refused(
    recording_store: RecordingStore, tenant: str, session_id: str
) -> None:
    with pytest.raises(errors.InvalidRequest):
        recording_store.get_meta(tenant, session_id)


def test_activity_is_tracked(recording_store: RecordingStore) -> None:
    sid = str(uuid.uuid4())
    recording_store.put_meta("acme", _meta(sid))
    time.sleep(1.1)  # S3 keeps LastModified to the second
    touched = datetime.now(UTC).replace(microsecond=0)
    assert recording_store.last_activity("acme", sid) < touched
    recording_store.touch("acme", sid)
    assert recording_store.last_activity("acme", sid) >= touched


def test_s3_objects_are_encrypted_under_tenant_and_session_keys() -> None:
    with mock_aws():
        _s3_layout(s3_recordings())


def _s3_layout(recording_store: RecordingStore) -> None:
    assert isinstance(recording_store, S3RecordingStore)
    sid = str(uuid.uuid4())
    meta = recording_store.put_meta("acme", _meta(sid))
    [(info, data)] = _parts(sid, [b"hello"])
    recording_store.put_part("acme", sid, info, data)
    recording_store.put_manifest("acme", _manifest("acme", meta, [info]))
    s3 = recording_store._s3
    head = s3.head_object(Bucket=recording_store.bucket, Key=f"sessions/acme/{sid}")
    assert head["ServerSideEncryption"] == "AES256"
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=recording_store.bucket, Prefix="sessions/")["Contents"]
    }
    assert keys == {
        f"sessions/acme/{sid}",
        f"sessions/acme/{sid}.meta.json",
        f"sessions/acme/{sid}.manifest.json",
    }

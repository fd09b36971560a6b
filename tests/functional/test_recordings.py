"""Recordings through the handlers: the proxy's upload calls, then the API's list, read,
verify; tampering, refusals, tenant isolation and the platform's completion of lost sessions."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.recordings.s3 import S3RecordingStore
from jumpgate.edge_proxy.events import decode_response
from jumpgate.protocol import recording
from jumpgate.protocol.recording import PartInfo
from tests.functional.conftest import Platform, Session
from tests.functional.test_locks import _bob
from tests.support import gzip_part


def _internal(platform: Platform, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    answer = decode_response(platform.internal(f"/internal/v1/recordings/{path}", body))
    return answer.status, json.loads(answer.body) if answer.body else None


def _meta(sid: str, user: str = "alice") -> dict[str, Any]:
    return {
        "session_id": sid,
        "kind": "exec",
        "user": user,
        "login": "root",
        "command": "echo hi",
        "started": datetime.now(UTC).isoformat(),
        "server_id": "node-1",
        "nodename": "web-1",
    }


def _frames(*chunks: bytes) -> bytes:
    return b"".join(
        recording.frame_header(recording.OUTPUT, n * 0.5, len(c)) + c for n, c in enumerate(chunks)
    )


def _upload(
    platform: Platform, tenant: str, user: str, chunks: list[bytes], *, complete: bool = True
) -> tuple[str, list[PartInfo]]:
    """Upload a recording as the proxy does for a node; its id and parts."""
    sid = str(uuid.uuid4())
    status, opened = _internal(platform, "open", {"tenant": tenant, "meta": _meta(sid, user)})
    assert (status, opened) == (200, {"parts": 0})
    previous, infos = recording.genesis(sid), []
    for index, chunk in enumerate(chunks, start=1):
        data = gzip_part(_frames(chunk))
        info = recording.part_info(index, data, previous)
        body = {
            "tenant": tenant,
            "session_id": sid,
            "server_id": "node-1",
            "previous": previous,
            "info": info.model_dump(),
            "data": base64.b64encode(data).decode(),
        }
        assert _internal(platform, "part", body)[0] == 204
        previous = info.chain
        infos.append(info)
    if complete:
        end = {"ended": datetime.now(UTC).isoformat(), "exit_code": 0}
        done = {"tenant": tenant, "session_id": sid, "server_id": "node-1", "parts": len(infos)}
        assert _internal(platform, "complete", {**done, "end": end})[0] == 204
    return sid, infos


def _play(platform: Platform, session: Session, sid: str) -> bytes:
    info = platform.call("GET", f"/v1/recordings/{sid}", session=session)
    assert info.status == 200, info.body
    out = b""
    for index in range(1, len(info.body["parts"]) + 1):
        part = platform.call("GET", f"/v1/recordings/{sid}/parts/{index}", session=session)
        assert part.status == 200, part.body
        for _, _, payload in recording.frames(
            recording.decompress(base64.b64decode(part.body["data"]))
        ):
            out += payload
    return out


def _tamper(platform: Platform, tenant: str, sid: str, index: int) -> None:
    """Change one byte of stored part ``index``, behind the store's back."""
    store = platform.plane.recordings.recordings
    if isinstance(store, LocalRecordingStore):
        [path] = (store.root / tenant / sid / "parts").glob(f"{index:06d}.*")
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    assert isinstance(store, S3RecordingStore)
    key = f"{store.prefix}{tenant}/{sid}"
    manifest = store.get_manifest(tenant, sid)
    assert manifest is not None
    offset = sum(p.size for p in manifest.parts[:index]) - 5
    whole = bytearray(store._s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    whole[offset] ^= 0xFF
    store._s3.put_object(Bucket=store.bucket, Key=key, Body=bytes(whole))


def test_a_recording_is_listed_played_and_verified(platform: Platform) -> None:
    admin = platform.admin_session()
    sid, _ = _upload(platform, "acme", "alice", [b"hello ", b"world\n", b"bye\n"])
    rows = platform.call("GET", "/v1/recordings", session=admin).body["recordings"]
    assert [(r["session_id"], r["kind"], r["nodename"], r["synthesized"]) for r in rows] == [
        (sid, "exec", "web-1", False)
    ]
    assert _play(platform, admin, sid) == b"hello world\nbye\n"
    verdict = platform.call("POST", f"/v1/recordings/{sid}/verify", session=admin)
    assert verdict.body == {
        "session_id": sid,
        "ok": True,
        "complete": True,
        "parts": 3,
        "problems": [],
    }


def test_a_modified_part_is_named_by_verify_and_refused_by_play(platform: Platform) -> None:
    admin = platform.admin_session()
    sid, _ = _upload(platform, "acme", "alice", [b"a" * 100, b"b" * 100, b"c" * 100])
    _tamper(platform, "acme", sid, 2)
    verdict = platform.call("POST", f"/v1/recordings/{sid}/verify", session=admin).body
    assert verdict["ok"] is False
    assert len(verdict["problems"]) == 1
    assert verdict["problems"][0].startswith("part 2 of 3 was modified")
    played = platform.call("GET", f"/v1/recordings/{sid}/parts/2", session=admin)
    assert played.status == 409
    assert "part 2 of 3 was modified" in played.detail
    assert platform.call("GET", f"/v1/recordings/{sid}/parts/1", session=admin).status == 200


def test_other_tenants_and_other_users_see_nothing(platform: Platform) -> None:
    admin = platform.admin_session()
    bob = _bob(platform, admin)
    theirs = platform.admin_session("globex", "gina")
    sid, _ = _upload(platform, "acme", "alice", [b"alice's secret\n"])
    bobs, _ = _upload(platform, "acme", "bob", [b"bob's own\n"])
    for session in (theirs, bob):
        for method, path in (
            ("GET", f"/v1/recordings/{sid}"),
            ("GET", f"/v1/recordings/{sid}/parts/1"),
        ):
            answer = platform.call(method, path, session=session, tenant=session.tenant)
            assert answer.status == 404, (session.user, path)
            assert "see jump recordings ls" in answer.detail
    foreign = platform.call("POST", f"/v1/recordings/{sid}/verify", session=theirs, tenant="globex")
    assert foreign.status == 404
    # verifying is reading (session read): bob may read only his own, and is not told
    # another's exists
    assert platform.call("POST", f"/v1/recordings/{sid}/verify", session=bob).status == 404
    assert platform.call("POST", f"/v1/recordings/{bobs}/verify", session=bob).status == 200
    listed = platform.call("GET", "/v1/recordings", session=theirs, tenant="globex")
    assert listed.body["recordings"] == []
    searched = platform.call(
        "GET", "/v1/audit/events", session=theirs, tenant="globex", query="type=session.upload"
    )
    assert searched.body["events"] == []
    mine = platform.call("GET", "/v1/recordings", session=bob).body["recordings"]
    assert [r["session_id"] for r in mine] == [bobs]
    assert _play(platform, bob, bobs) == b"bob's own\n"
    # a proxy naming the other tenant for this session finds nothing to add to
    status, _ = _internal(
        platform,
        "complete",
        {
            "tenant": "globex",
            "session_id": sid,
            "server_id": "node-1",
            "parts": 1,
            "end": {"ended": datetime.now(UTC).isoformat()},
        },
    )
    assert status == 404


@pytest.mark.parametrize(
    "change",
    ["digest", "chain", "gap", "other-node", "not-base64"],
)
def test_bad_parts_are_refused_with_a_reason(platform: Platform, change: str) -> None:
    platform.admin_session()
    sid, [first] = _upload(platform, "acme", "alice", [b"one"], complete=False)
    data = gzip_part(_frames(b"two"))
    info = recording.part_info(2, data, first.chain)
    body: dict[str, Any] = {
        "tenant": "acme",
        "session_id": sid,
        "server_id": "node-1",
        "previous": first.chain,
        "info": info.model_dump(),
        "data": base64.b64encode(data).decode(),
    }
    if change == "digest":
        body["data"] = base64.b64encode(data + b"x").decode()
    elif change == "chain":
        body["previous"] = "0" * 64
    elif change == "gap":
        body["info"] = {**body["info"], "index": 3}
    elif change == "other-node":
        body["server_id"] = "node-2"
    else:
        body["data"] = "***"
    status, problem = _internal(platform, "part", body)
    assert status in (400, 409), problem
    assert problem["detail"]
    assert "\n" not in problem["detail"]
    assert [p.index for p in platform.plane.recordings.recordings.parts("acme", sid)] == [1]


def test_a_session_whose_node_never_returns_is_completed_after_the_grace(
    platform: Platform,
) -> None:
    admin = platform.admin_session()
    sid, _ = _upload(platform, "acme", "alice", [b"last words\n"], complete=False)
    assert platform.plane.recordings.sweep() == []
    # The stores note activity in real time (file mtime, S3 LastModified): move the manual
    # clock to just past real time plus the grace, then log in again.
    platform.clock.advance(datetime.now(UTC) + timedelta(minutes=59) - platform.clock.now())
    assert platform.plane.recordings.sweep() == []
    platform.clock.advance(timedelta(minutes=2))
    assert platform.plane.recordings.sweep() == [("acme", sid)]
    assert platform.login(admin).status == 200
    [row] = platform.call("GET", "/v1/recordings", session=admin).body["recordings"]
    assert (row["session_id"], row["synthesized"]) == (sid, True)
    query = "type=session.end"
    [end] = platform.call("GET", "/v1/audit/events", session=admin, query=query).body["events"]
    assert (end["session_id"], end["synthesized"], end["code"]) == (sid, True, "J2004W")
    assert _play(platform, admin, sid) == b"last words\n"
    verdict = platform.call("POST", f"/v1/recordings/{sid}/verify", session=admin).body
    assert (verdict["ok"], verdict["complete"]) == (True, True)


def test_bad_session_ids_get_one_line(platform: Platform, tmp_path: Path) -> None:
    admin = platform.admin_session()
    for path in ("/v1/recordings/..%2Fetc", "/v1/recordings/NOT-A-UUID/parts/1"):
        answer = platform.call("GET", path, session=admin)
        assert answer.status in (400, 404)
        assert "\n" not in answer.detail

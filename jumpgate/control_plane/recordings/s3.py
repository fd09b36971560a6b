"""Recordings in S3: parts land as objects while the session runs; on completion they are
assembled into ``<prefix><tenant>/<session>`` by a multipart upload (5 MiB parts, the last
smaller), and the staged parts are removed.

Every object is written with SSE-S3. Keys beside the recording:

- ``<tenant>/<session>.meta.json`` and ``.manifest.json``;
- ``<tenant>/<session>.parts/<index>.<sha256>.<chain>`` while it is open;
- ``<tenant>/<session>.alive``, touched while a long quiet session goes on.

S3 errors that retrying can fix (5xx, throttling, no connection) are ``StoreUnavailable``.
"""

import builtins
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from jumpgate.control_plane import errors
from jumpgate.control_plane.recordings.base import (
    RecordingStore,
    checked,
    parse_part_name,
    part_name,
)
from jumpgate.protocol.recording import Manifest, PartInfo, RecordingMeta

MIN_PART = 5 * 1024 * 1024
SSE = {"ServerSideEncryption": "AES256"}
_MISSING = ("NoSuchKey", "404", "NotFound")


def _unavailable(exc: Exception) -> errors.StoreUnavailable:
    return errors.StoreUnavailable(f"the recordings store failed, try again: {str(exc)[:200]}")


class S3RecordingStore(RecordingStore):
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._s3 = client

    @classmethod
    def from_uri(cls, uri: str, *, session: boto3.Session | None = None) -> "S3RecordingStore":
        """``s3://bucket/prefix?region=...&endpoint=...`` (as Teleport's audit_sessions_uri);
        the client is made in ``session`` if given (boto3's default session otherwise)."""
        parts = urlsplit(uri)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        client = (session or boto3).client(
            "s3",
            region_name=query.get("region") or None,
            endpoint_url=query.get("endpoint") or None,
            config=BotoConfig(retries={"mode": "standard", "max_attempts": 3}),
        )
        return cls(parts.netloc, parts.path, client=client)

    def _key(self, tenant: str, session_id: str, suffix: str = "") -> str:
        tenant, session_id = checked(tenant, session_id)
        return f"{self.prefix}{tenant}/{session_id}{suffix}"

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._s3, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise errors.NotFound("not in the recordings store") from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500 or "Throttl" in code or code == "SlowDown":
                raise _unavailable(exc) from exc
            raise
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc

    def _get(self, key: str, **kwargs: Any) -> bytes:
        answer = self._call("get_object", Key=key, **kwargs)
        try:
            return bytes(answer["Body"].read())
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self._call("put_object", Key=key, Body=data, ContentType=content_type, **SSE)

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self._call("list_objects_v2", Prefix=prefix, **token)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def put_meta(self, tenant: str, meta: RecordingMeta) -> RecordingMeta:
        key = self._key(tenant, meta.session_id, ".meta.json")
        try:
            return RecordingMeta.model_validate_json(self._get(key))
        except errors.NotFound:
            pass
        self._put(key, meta.model_dump_json().encode(), "application/json")
        return meta

    def get_meta(self, tenant: str, session_id: str) -> RecordingMeta:
        try:
            return RecordingMeta.model_validate_json(
                self._get(self._key(tenant, session_id, ".meta.json"))
            )
        except errors.NotFound:
            raise errors.NotFound(
                f"no recording {session_id} in cluster {tenant!r}: see jump recordings ls"
            ) from None

    def _write_part(self, tenant: str, session_id: str, info: PartInfo, data: bytes) -> None:
        key = self._key(tenant, session_id, ".parts/") + part_name(info)
        self._put(key, data, "application/gzip")

    def _staged(
        self, tenant: str, session_id: str, index: int | None = None
    ) -> builtins.list[tuple[PartInfo, str]]:
        """Staged parts with their keys: all of them, or only part ``index``."""
        prefix = self._key(tenant, session_id, ".parts/")
        found = []
        for item in self._list(prefix + (f"{index:06d}." if index is not None else "")):
            info = parse_part_name(item["Key"][len(prefix) :], int(item["Size"]))
            if info is not None:
                found.append((info, item["Key"]))
        return sorted(found, key=lambda pair: pair[0].index)

    def part(self, tenant: str, session_id: str, index: int) -> PartInfo | None:
        staged = self._staged(tenant, session_id, index)
        if staged:
            return staged[0][0]
        manifest = self.get_manifest(tenant, session_id)
        if manifest is not None and 1 <= index <= len(manifest.parts):
            return manifest.parts[index - 1]
        return None

    def parts(self, tenant: str, session_id: str) -> builtins.list[PartInfo]:
        """Assembled parts (after a completion) and then the staged ones."""
        manifest = self.get_manifest(tenant, session_id)
        assembled = list(manifest.parts) if manifest is not None else []
        staged = [info for info, _ in self._staged(tenant, session_id)]
        return assembled + [info for info in staged if info.index > len(assembled)]

    def get_part(self, tenant: str, session_id: str, info: PartInfo) -> bytes:
        for _, key in self._staged(tenant, session_id, info.index):
            return self._get(key)
        manifest = self.get_manifest(tenant, session_id)
        missing = errors.NotFound(f"part {info.index} of recording {session_id} is missing")
        if manifest is None or not 1 <= info.index <= len(manifest.parts):
            raise missing
        offset = sum(p.size for p in manifest.parts[: info.index - 1])
        size = manifest.parts[info.index - 1].size
        if size == 0:
            return b""
        whole = self._key(tenant, session_id)
        try:
            data = self._get(whole, Range=f"bytes={offset}-{offset + size - 1}")
        except errors.NotFound:
            raise missing from None
        if len(data) != size:
            raise missing
        return data

    def put_manifest(self, tenant: str, manifest: Manifest) -> None:
        session_id = manifest.meta.session_id
        whole = self._key(tenant, session_id)
        staged = self._staged(tenant, session_id)
        earlier = self.get_manifest(tenant, session_id)
        if staged:
            # A recording completed by the platform may get late parts when its node returns:
            # the object is made again from what it held and the new parts.
            sources = [whole] if earlier is not None and earlier.size else []
            self._assemble(whole, sources + [key for _, key in staged])
        self._put(
            self._key(tenant, session_id, ".manifest.json"),
            manifest.model_dump_json().encode(),
            "application/json",
        )
        keys = [key for _, key in staged] + [self._key(tenant, session_id, ".alive")]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._call("delete_objects", Delete={"Objects": batch, "Quiet": True})

    def _assemble(self, key: str, staged: builtins.list[str]) -> None:
        """One object of the staged parts in order, by multipart upload of >= 5 MiB pieces."""
        upload = self._call(
            "create_multipart_upload", Key=key, ContentType="application/gzip", **SSE
        )
        upload_id = upload["UploadId"]
        done: builtins.list[dict[str, Any]] = []
        buffer = bytearray()

        def send() -> None:
            answer = self._call(
                "upload_part",
                Key=key,
                UploadId=upload_id,
                PartNumber=len(done) + 1,
                Body=bytes(buffer),
            )
            done.append({"ETag": answer["ETag"], "PartNumber": len(done) + 1})
            buffer.clear()

        try:
            for part_key in staged:
                buffer += self._get(part_key)
                if len(buffer) >= MIN_PART:
                    send()
            if buffer or not done:
                send()
            self._call(
                "complete_multipart_upload",
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except Exception:
            self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def get_manifest(self, tenant: str, session_id: str) -> Manifest | None:
        try:
            raw = self._get(self._key(tenant, session_id, ".manifest.json"))
        except errors.NotFound:
            return None
        return Manifest.model_validate_json(raw)

    def touch(self, tenant: str, session_id: str) -> None:
        self._put(self._key(tenant, session_id, ".alive"), b"", "text/plain")

    def last_activity(self, tenant: str, session_id: str) -> datetime:
        base = self._key(tenant, session_id)
        times: builtins.list[datetime] = [
            item["LastModified"]
            for item in self._list(base + ".")
            if not item["Key"].endswith(".manifest.json")
        ]
        if not times:
            raise errors.NotFound(f"no recording {session_id} in cluster {tenant!r}")
        return max(times)

    def unfinished(self) -> Iterator[tuple[str, str]]:
        metas, manifests = set(), set()
        for item in self._list(self.prefix):
            name = item["Key"][len(self.prefix) :]
            tenant, _, rest = name.partition("/")
            if rest.endswith(".meta.json"):
                metas.add((tenant, rest[: -len(".meta.json")]))
            elif rest.endswith(".manifest.json"):
                manifests.add((tenant, rest[: -len(".manifest.json")]))
        yield from sorted(metas - manifests)


def ensure_bucket(uri: str) -> None:
    """Create the bucket of ``uri`` if missing (local and dev use; production uses infra)."""
    store = S3RecordingStore.from_uri(uri)
    s3 = store._s3
    try:
        s3.head_bucket(Bucket=store.bucket)
    except ClientError:
        region = s3.meta.region_name
        options: dict[str, Any] = {}
        if region and region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(Bucket=store.bucket, **options)

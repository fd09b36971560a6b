"""Recordings as files under one directory (embedded): ``<root>/<tenant>/<session>/``.

``meta.json``, ``parts/<index>.<sha256>.<chain>`` and ``manifest.json``; each written to a
temporary name and renamed, so a crash leaves whole files or none.
"""

import builtins
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from jumpgate.control_plane import errors
from jumpgate.control_plane.recordings.base import (
    RecordingStore,
    checked,
    parse_part_name,
    part_name,
)
from jumpgate.protocol.recording import Manifest, PartInfo, RecordingMeta


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


class LocalRecordingStore(RecordingStore):
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, tenant: str, session_id: str) -> Path:
        tenant, session_id = checked(tenant, session_id)
        return self.root / tenant / session_id

    def put_meta(self, tenant: str, meta: RecordingMeta) -> RecordingMeta:
        path = self._dir(tenant, meta.session_id) / "meta.json"
        if path.exists():
            return RecordingMeta.model_validate_json(path.read_bytes())
        _write(path, meta.model_dump_json().encode())
        return meta

    def get_meta(self, tenant: str, session_id: str) -> RecordingMeta:
        path = self._dir(tenant, session_id) / "meta.json"
        try:
            return RecordingMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise errors.NotFound(
                f"no recording {session_id} in cluster {tenant!r}: see jump recordings ls"
            ) from None

    def _part_file(self, tenant: str, session_id: str, index: int) -> Path | None:
        found = sorted((self._dir(tenant, session_id) / "parts").glob(f"{index:06d}.*"))
        return found[0] if found else None

    def _write_part(self, tenant: str, session_id: str, info: PartInfo, data: bytes) -> None:
        _write(self._dir(tenant, session_id) / "parts" / part_name(info), data)

    def parts(self, tenant: str, session_id: str) -> builtins.list[PartInfo]:
        parts = self._dir(tenant, session_id) / "parts"
        if not parts.is_dir():
            return []
        found = []
        for entry in parts.iterdir():
            if entry.name.startswith("."):
                continue
            info = parse_part_name(entry.name, entry.stat().st_size)
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda p: p.index)

    def part(self, tenant: str, session_id: str, index: int) -> PartInfo | None:
        path = self._part_file(tenant, session_id, index)
        return parse_part_name(path.name, path.stat().st_size) if path is not None else None

    def get_part(self, tenant: str, session_id: str, info: PartInfo) -> bytes:
        path = self._part_file(tenant, session_id, info.index)
        if path is None:
            raise errors.NotFound(f"part {info.index} of recording {session_id} is missing")
        return path.read_bytes()

    def put_manifest(self, tenant: str, manifest: Manifest) -> None:
        path = self._dir(tenant, manifest.meta.session_id) / "manifest.json"
        _write(path, manifest.model_dump_json().encode())

    def get_manifest(self, tenant: str, session_id: str) -> Manifest | None:
        path = self._dir(tenant, session_id) / "manifest.json"
        if not path.exists():
            return None
        return Manifest.model_validate_json(path.read_bytes())

    def touch(self, tenant: str, session_id: str) -> None:
        _write(self._dir(tenant, session_id) / "alive", b"")

    def last_activity(self, tenant: str, session_id: str) -> datetime:
        directory = self._dir(tenant, session_id)
        candidates = [directory / "meta.json", directory / "alive", directory / "parts"]
        times = [p.stat().st_mtime for p in candidates if p.exists()]
        if not times:
            raise errors.NotFound(f"no recording {session_id} in cluster {tenant!r}")
        return datetime.fromtimestamp(max(times), UTC)

    def unfinished(self) -> Iterator[tuple[str, str]]:
        if not self.root.is_dir():
            return
        for tenant in sorted(self.root.iterdir()):
            for session in sorted(tenant.iterdir()) if tenant.is_dir() else ():
                if (session / "meta.json").exists() and not (session / "manifest.json").exists():
                    yield tenant.name, session.name

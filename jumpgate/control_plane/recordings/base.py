"""The recordings store: a recording's metadata, its parts and its signed manifest.

Two implementations pass one conformance suite (tests/conformance/test_recordings.py): local
files (embedded) and S3. Parts are immutable: storing a part again with the same digest is a
no-op (a resumed upload), with another digest it is refused. Keys are ``<tenant>/<session>``.

Errors: ``NotFound`` (no such recording or part), ``Conflict`` (a part or a session that is
someone else's), ``StoreUnavailable`` (the store failed; nothing was lost, try again).
"""

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime

from jumpgate.control_plane import errors
from jumpgate.protocol.names import check_tenant_name
from jumpgate.protocol.recording import Manifest, PartInfo, RecordingMeta, check_session_id


def part_name(info: PartInfo) -> str:
    """A stored part's name carries its digests, so one listing gives every part's."""
    return f"{info.index:06d}.{info.sha256}.{info.chain}"


def parse_part_name(name: str, size: int) -> PartInfo | None:
    index, _, rest = name.partition(".")
    sha256, _, chain = rest.partition(".")
    try:
        return PartInfo(index=int(index), size=size, sha256=sha256, chain=chain)
    except ValueError:
        return None


def checked(tenant: str, session_id: str) -> tuple[str, str]:
    try:
        return check_tenant_name(tenant), check_session_id(session_id)
    except ValueError as exc:
        raise errors.InvalidRequest(str(exc)) from exc


class RecordingStore(ABC):
    """Where recordings are kept; every call names the tenant first."""

    @abstractmethod
    def put_meta(self, tenant: str, meta: RecordingMeta) -> RecordingMeta:
        """Store ``meta`` unless the session has some already; the stored one."""

    @abstractmethod
    def get_meta(self, tenant: str, session_id: str) -> RecordingMeta:
        """``NotFound`` when the tenant has no such recording."""

    def put_part(self, tenant: str, session_id: str, info: PartInfo, data: bytes) -> None:
        """Store one part; again with the same digest is a no-op (a resumed upload), with
        another digest ``Conflict``."""
        stored = self.part(tenant, session_id, info.index)
        if stored is None:
            self._write_part(tenant, session_id, info, data)
        elif stored.sha256 != info.sha256:
            raise errors.Conflict(f"part {info.index} is stored with other bytes")

    @abstractmethod
    def _write_part(self, tenant: str, session_id: str, info: PartInfo, data: bytes) -> None:
        """Write a part not stored yet."""

    @abstractmethod
    def parts(self, tenant: str, session_id: str) -> builtins.list[PartInfo]:
        """The parts stored so far, by index."""

    @abstractmethod
    def part(self, tenant: str, session_id: str, index: int) -> PartInfo | None:
        """Part ``index`` if it is stored (one lookup, not a listing of every part)."""

    @abstractmethod
    def get_part(self, tenant: str, session_id: str, info: PartInfo) -> bytes:
        """A part's bytes as stored (not checked here); ``NotFound`` if it is gone."""

    @abstractmethod
    def put_manifest(self, tenant: str, manifest: Manifest) -> None:
        """Store the signed manifest; the recording is complete."""

    @abstractmethod
    def get_manifest(self, tenant: str, session_id: str) -> Manifest | None:
        """The manifest, or None while the recording is open."""

    @abstractmethod
    def touch(self, tenant: str, session_id: str) -> None:
        """Note that the session is still going."""

    @abstractmethod
    def last_activity(self, tenant: str, session_id: str) -> datetime:
        """When a part, the metadata or a touch last reached the store."""

    @abstractmethod
    def unfinished(self) -> Iterator[tuple[str, str]]:
        """Every (tenant, session id) with metadata and no manifest."""

"""The frame stream of a recording, ``frames.gz``, as consecutive gzip members (see
``recording``): each member is exactly one part, byte for byte as it is uploaded.

Every frame is compressed, sync-flushed and written with one ``write`` before the session
sends it on, so the open member decodes up to the last byte the user saw, even after
kill -9. Compression is ISA-L's fastest level (``isal_zlib``: the same gzip format as
zlib's, written several times faster; readers use the standard ``zlib``).
"""

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from isal import isal_zlib

from jumpgate.protocol import recording

GZIP = 31  # zlib wbits: a gzip member (header without name or time, CRC-32 and size trailer)


@dataclass(frozen=True)
class Member:
    """A finished gzip member of ``frames.gz``: where it is, its digest, and its bytes when a
    reader of the spool has them anyway (``recover``). The recorder keeps none: the uploader
    reads a part back from the spool when it sends it, so a busy session costs the agent
    its compressor and one chunk, not its parts (issue 14: 24 MB per session, now < 1 MB)."""

    start: int
    size: int
    sha256: str
    data: bytes | None

    @classmethod
    def of(cls, start: int, data: bytes) -> "Member":
        return cls(start, len(data), hashlib.sha256(data).hexdigest(), data)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"short write to the recording ({written} bytes)")
        view = view[written:]


def bound(length: int) -> int:
    """The most ``length`` raw bytes can take in a member (zlib's compressBound, a sync flush
    and the gzip header and trailer)."""
    return length + (length >> 12) + (length >> 14) + 64


class Members:
    """Appends frames to a spool file as gzip members, each within a part's limits: a member
    is finished before it would hold more than ``PART_RAW_BYTES`` of frames or be larger than
    ``MAX_PART_BYTES``. Every frame is sync-flushed and written at once, so what is on disk
    decodes to its last frame. Raises ``OSError`` when the file cannot be written."""

    def __init__(self, fd: int, on_finished: Callable[[], None] | None = None) -> None:
        self._fd = fd
        self._offset = os.fstat(fd).st_size
        self._member: isal_zlib.Compress | None = None
        self._start = self._offset
        self._raw = 0
        self.began = 0.0  # when the open member began (monotonic)
        self._digest = hashlib.sha256()  # of the open member's bytes, for its part
        self.finished: list[Member] = []
        self._on_finished = on_finished

    @property
    def open(self) -> bool:
        return self._member is not None

    def frame(self, kind: bytes, at: float, payload: bytes | memoryview) -> None:
        size = recording.FRAME.size + len(payload)
        if self._member is not None and (
            self._raw + size > recording.PART_RAW_BYTES
            or self._offset - self._start + bound(size) > recording.MAX_PART_BYTES
        ):
            self.finish()
        if self._member is None:
            self._member = isal_zlib.compressobj(1, isal_zlib.DEFLATED, GZIP)
            self._start = self._offset
            self._raw = 0
            self._digest = hashlib.sha256()
            self.began = time.monotonic()
        member = self._member
        header = recording.frame_header(kind, at, len(payload))
        self._put(
            member.compress(header)
            + member.compress(payload)
            + member.flush(isal_zlib.Z_SYNC_FLUSH)
        )
        self._raw += size

    def _put(self, out: bytes) -> None:
        write_all(self._fd, out)
        self._offset += len(out)
        self._digest.update(out)

    def finish(self) -> None:
        if self._member is None:
            return
        self._put(self._member.flush(isal_zlib.Z_FINISH))
        self._member = None
        size = self._offset - self._start
        self.finished.append(Member(self._start, size, self._digest.hexdigest(), None))
        if self._on_finished is not None:
            self._on_finished()

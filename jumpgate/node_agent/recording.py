"""Recording on the node: a spool in the data dir, written on the session's path, read by the
uploader (``node_agent.uploads``).

Each session is a directory ``<data_dir>/recordings/<session-id>/``:

- ``meta.json``: what the session is (``protocol.recording.RecordingMeta``);
- ``frames.gz``: the frame stream, compressed as it is written, as consecutive gzip members
  (``recording_members``): each member is exactly one part, byte for byte as it is uploaded.
  Every chunk of output is compressed, sync-flushed and written with one ``write`` before the
  chunk is sent to the user, so the open member decodes up to the last byte the user saw,
  even after kill -9;
- ``state.json``: the parts sealed so far (byte ranges of ``frames.gz`` with their digests),
  saved now and then: it only spares ``recover`` a pass over parts it can find again. What
  the platform has stored is asked of the platform, never remembered;
- ``end.json``: how the session ended, once it has.

Writing compressed costs the session one pass of ISA-L's fastest level (``isal_zlib``: the
same gzip format as zlib's, written several times faster; reading uses the standard ``zlib``);
writing the frames raw and compressing them later cost a copy into the page cache, its
writeback and a read back as well (docs/decisions/0009). Nothing here is deleted until the
platform has confirmed the whole recording.
"""

import contextlib
import hashlib
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from jumpgate.node_agent.recording_members import GZIP, Member, Members
from jumpgate.protocol import recording
from jumpgate.protocol.recording import PartInfo, RecordingMeta, SessionEnd

logger = logging.getLogger(__name__)

_REPAIR_READ = 64 * 1024
SAVE_SECONDS = 5.0


class SealedPart(BaseModel):
    """A part and the range of ``frames.gz`` that is its bytes."""

    info: PartInfo
    start: int
    end: int


class SpoolState(BaseModel):
    parts: list[SealedPart] = []

    @property
    def sealed(self) -> int:
        return self.parts[-1].end if self.parts else 0


def _write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as out:
        out.write(data)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)


class SessionSpool:
    """One session's directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.session_id = directory.name
        self.frames = directory / "frames.gz"
        self._state: SpoolState | None = None
        self._saved = 0.0
        self.acked = 0  # parts the platform has stored, as it last said

    @property
    def meta(self) -> RecordingMeta:
        return RecordingMeta.model_validate_json((self.directory / "meta.json").read_bytes())

    @property
    def state(self) -> SpoolState:
        if self._state is None:
            path = self.directory / "state.json"
            self._state = (
                SpoolState.model_validate_json(path.read_bytes()) if path.exists() else SpoolState()
            )
        return self._state

    def save(self, *, now: bool = True) -> None:
        """Not synced, and with ``now=False`` at most every ``SAVE_SECONDS``: ``recover`` can
        make the state again from ``frames.gz``, so it is not worth a write per part."""
        if not now and time.monotonic() - self._saved < SAVE_SECONDS:
            return
        _write_atomically(
            self.directory / "state.json", self.state.model_dump_json().encode(), durable=False
        )
        self._saved = time.monotonic()

    @property
    def end(self) -> SessionEnd | None:
        path = self.directory / "end.json"
        return SessionEnd.model_validate_json(path.read_bytes()) if path.exists() else None

    def finish(self, end: SessionEnd) -> None:
        _write_atomically(self.directory / "end.json", end.model_dump_json().encode())

    def size(self) -> int:
        try:
            return self.frames.stat().st_size
        except FileNotFoundError:
            return 0

    def pending(self) -> bool:
        """Whether ``frames.gz`` holds bytes not yet in a sealed part."""
        return self.size() > self.state.sealed

    def seal(self, members: list[Member]) -> list[tuple[SealedPart, bytes | None]]:
        """Record finished members as the next parts (digests chained); each with its bytes
        if the member still held them."""
        state = self.state
        genesis = recording.genesis(self.session_id)
        made: list[tuple[SealedPart, bytes | None]] = []
        for member in members:
            if member.start != state.sealed:
                raise ValueError(
                    f"recording {self.session_id}: member at {member.start}, "
                    f"expected one at {state.sealed}"
                )
            previous = state.parts[-1].info.chain if state.parts else genesis
            info = PartInfo(
                index=len(state.parts) + 1,
                size=member.size,
                sha256=member.sha256,
                chain=recording.chained(previous, member.sha256),
            )
            part = SealedPart(info=info, start=member.start, end=member.start + member.size)
            state.parts.append(part)
            made.append((part, member.data))
        if made:
            self.save(now=False)
        return made

    def recover(self) -> list[Member]:
        """The members after the last sealed part of a session no recorder writes any more
        (it ended, or the agent died under it). Whole members are taken as they are; an open
        or torn one at the end is cut back to its whole frames and finished, in place."""
        members: list[Member] = []
        if not self.pending():
            return members
        with self.frames.open("rb") as spool:
            position = self.state.sealed
            size = os.fstat(spool.fileno()).st_size
            while position < size:
                spool.seek(position)
                window = spool.read(recording.MAX_PART_BYTES + 1)
                inflater = zlib.decompressobj(GZIP)
                with contextlib.suppress(zlib.error):  # a torn member: finished below
                    inflater.decompress(window, recording.PART_RAW_BYTES + 1)
                if not inflater.eof:
                    break
                length = len(window) - len(inflater.unused_data)
                members.append(Member.of(position, window[:length]))
                position += length
        if position < size:
            members.extend(self._finish_tail(position, window))
        return members

    def _finish_tail(self, start: int, window: bytes) -> list[Member]:
        inflater = zlib.decompressobj(GZIP)
        raw = bytearray()
        try:
            for offset in range(0, len(window), _REPAIR_READ):
                raw += inflater.decompress(
                    window[offset : offset + _REPAIR_READ], recording.PART_RAW_BYTES - len(raw)
                )
                if inflater.eof or inflater.unconsumed_tail:
                    break
        except zlib.error as exc:
            logger.warning(
                "recording spool torn; keeping what decodes",
                extra={"session_id": self.session_id, "reason": str(exc)},
            )
        os.truncate(self.frames, start)
        fd = os.open(self.frames, os.O_WRONLY | os.O_APPEND)
        try:
            writer = Members(fd)
            for kind, at, payload in recording.frames(bytes(raw)):
                writer.frame(kind, at, payload)
            writer.finish()
            os.fsync(fd)
        finally:
            os.close(fd)
        return writer.finished

    def part_bytes(self, part: SealedPart) -> bytes:
        """A sealed part's bytes from the spool; ``ValueError`` if they changed."""
        with self.frames.open("rb") as source:
            source.seek(part.start)
            data = source.read(part.end - part.start)
        if hashlib.sha256(data).hexdigest() != part.info.sha256:
            raise ValueError(f"spooled part {part.info.index} no longer matches its digest")
        return data

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Recorder:
    """Writes one live session's frames. Never raises on the session's path: a write that
    fails sets ``failed`` and the session decides (``node`` goes on, ``node-sync`` ends).

    A member is finished (and becomes a part) before it would hold more than
    ``PART_RAW_BYTES`` of frames or be larger than ``MAX_PART_BYTES``, when the uploader finds
    it ``due``, and when the session ends. ``take`` hands finished members to the uploader.
    """

    def __init__(self, spool: SessionSpool, *, on_part: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.failed: OSError | None = None
        self.closed = False
        self._last_write = time.monotonic()
        self._start = self._last_write
        self._fd = os.open(spool.frames, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._members = Members(self._fd, on_part)
        self._wake = on_part

    def _write(self, kind: bytes, data: bytes) -> bool:
        if self.failed is not None:
            return False
        now = time.monotonic()
        view = memoryview(data)  # slices without copying the session's output
        try:
            for offset in range(0, len(data), recording.MAX_FRAME_BYTES):
                chunk = view[offset : offset + recording.MAX_FRAME_BYTES]
                self._members.frame(kind, now - self._start, chunk)
        except OSError as exc:
            self.failed = exc
            logger.warning(
                "recording failed", extra={"session_id": self.spool.session_id, "reason": str(exc)}
            )
            return False
        self._last_write = now
        return True

    def output(self, data: bytes) -> bool:
        return self._write(recording.OUTPUT, data)

    def resize(self, width: int, height: int) -> bool:
        return self._write(recording.RESIZE, recording.resize_payload(width, height))

    def due(self, now: float) -> bool:
        """Whether the open member should be cut: quiet for ``FLUSH_SECONDS``, or begun
        ``PART_SECONDS`` ago."""
        return self._members.open and (
            now - self._last_write >= recording.FLUSH_SECONDS
            or now - self._members.began >= recording.PART_SECONDS
        )

    def cut(self) -> None:
        """Finish the open member now."""
        if self.failed is not None:
            return
        try:
            self._members.finish()
        except OSError as exc:
            self.failed = exc

    def take(self) -> list[Member]:
        """Members finished since the last call, oldest first."""
        taken, self._members.finished = self._members.finished, []
        return taken

    def close(self, exit_code: int | None) -> None:
        """Finish the last member and the session (``closed`` only once both are on disk)."""
        self.cut()
        os.close(self._fd)
        try:
            self.spool.finish(SessionEnd(ended=datetime.now(UTC), exit_code=exit_code))
        except OSError as exc:  # the uploader ends it as interrupted instead
            logger.warning(
                "recording end not written",
                extra={"session_id": self.spool.session_id, "reason": str(exc)},
            )
        self.closed = True
        if self._wake is not None:
            self._wake()


class Spool:
    """Every session recorded on this node that the platform has not confirmed yet."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, meta: RecordingMeta) -> SessionSpool:
        directory = self.root / recording.check_session_id(meta.session_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)  # not 0755 as a parent
        directory.mkdir(mode=0o700)
        _write_atomically(directory / "meta.json", meta.model_dump_json().encode())
        return SessionSpool(directory)

    def sessions(self) -> Iterator[SessionSpool]:
        """Spooled sessions, oldest first; directories without a meta file are leftovers of a
        crash before the session started and are removed."""
        if not self.root.is_dir():
            return
        entries = sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime)
        for directory in entries:
            if not directory.is_dir():
                continue
            if not (directory / "meta.json").exists():
                shutil.rmtree(directory, ignore_errors=True)
                continue
            yield SessionSpool(directory)


def interrupted_end(spool: SessionSpool) -> SessionEnd:
    """The end of a session whose agent died under it: when its last output was written."""
    try:
        mtime = spool.frames.stat().st_mtime
    except FileNotFoundError:
        mtime = (spool.directory / "meta.json").stat().st_mtime
    return SessionEnd(ended=datetime.fromtimestamp(mtime, UTC), exit_code=None)

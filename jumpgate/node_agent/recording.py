"""Recording on the node: a spool in the data dir, written on the session's path, read by the
uploader (``node_agent.uploads``).

Each session is a directory ``<data_dir>/recordings/<session-id>/``:

- ``meta.json``: what the session is (``protocol.recording.RecordingMeta``);
- ``frames``: the frame stream, appended with one ``writev`` per chunk of output, before the
  chunk is sent to the user (so every byte the user saw is on disk, even after kill -9);
- ``state.json``: the parts sealed so far (byte ranges of ``frames`` with their digests) and
  how many the platform has confirmed;
- ``end.json``: how the session ended, once it has.

A part's bytes are never kept: they are made again from ``frames`` when needed (gzip at a
fixed level with no timestamp gives the same bytes). Nothing here is deleted until the
platform has confirmed the whole recording.
"""

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from jumpgate.protocol import recording
from jumpgate.protocol.recording import PartInfo, RecordingMeta, SessionEnd

logger = logging.getLogger(__name__)


class SealedPart(BaseModel):
    """A part and the range of ``frames`` it was made from."""

    info: PartInfo
    start: int
    end: int


class SpoolState(BaseModel):
    parts: list[SealedPart] = []
    acked: int = 0  # parts the platform has stored

    @property
    def sealed(self) -> int:
        return self.parts[-1].end if self.parts else 0


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


class SessionSpool:
    """One session's directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.session_id = directory.name
        self.frames = directory / "frames"
        self._state: SpoolState | None = None

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

    def save(self) -> None:
        _write_atomically(self.directory / "state.json", self.state.model_dump_json().encode())

    @property
    def end(self) -> SessionEnd | None:
        path = self.directory / "end.json"
        return SessionEnd.model_validate_json(path.read_bytes()) if path.exists() else None

    def finish(self, end: SessionEnd) -> None:
        _write_atomically(self.directory / "end.json", end.model_dump_json().encode())

    def pending(self) -> int:
        """Frame bytes not yet in a part."""
        try:
            return self.frames.stat().st_size - self.state.sealed
        except FileNotFoundError:
            return 0

    def idle_for(self, now: float) -> float:
        try:
            return now - self.frames.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def seal(self, *, everything: bool) -> list[tuple[SealedPart, bytes]]:
        """Cut waiting frame bytes into parts: whole ``PART_RAW_BYTES`` pieces, and the rest
        too when ``everything``. The new parts with their bytes (to send at once)."""
        state = self.state
        made: list[tuple[SealedPart, bytes]] = []
        with self.frames.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            while size > state.sealed and (
                everything or size - state.sealed >= recording.PART_RAW_BYTES
            ):
                start = state.sealed
                end = min(size, start + recording.PART_RAW_BYTES)
                source.seek(start)
                data = recording.compress(source.read(end - start))
                previous = state.parts[-1].info.chain if state.parts else None
                info = recording.part_info(
                    len(state.parts) + 1, data, previous or recording.genesis(self.session_id)
                )
                part = SealedPart(info=info, start=start, end=end)
                state.parts.append(part)
                made.append((part, data))
        if made:
            self.save()
        return made

    def part_bytes(self, part: SealedPart) -> bytes:
        """A sealed part made again from its frames; ``ValueError`` if they changed."""
        with self.frames.open("rb") as source:
            source.seek(part.start)
            data = recording.compress(source.read(part.end - part.start))
        if hashlib.sha256(data).hexdigest() != part.info.sha256:
            raise ValueError(f"spooled part {part.info.index} no longer matches its digest")
        return data

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Recorder:
    """Writes one live session's frames. Never raises on the session's path: a write that
    fails sets ``failed`` and the session decides (``node`` goes on, ``node-sync`` ends)."""

    def __init__(self, spool: SessionSpool, *, on_part: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.failed: OSError | None = None
        self._start = time.monotonic()
        self._fd = os.open(spool.frames, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._since_wake = 0
        self._wake = on_part

    def _write(self, kind: bytes, data: bytes) -> bool:
        if self.failed is not None:
            return False
        header = recording.frame_header(kind, time.monotonic() - self._start, len(data))
        try:
            written = os.writev(self._fd, (header, data))
            if written != len(header) + len(data):
                raise OSError(f"short write to the recording ({written} bytes)")
        except OSError as exc:
            self.failed = exc
            logger.warning(
                "recording failed", extra={"session_id": self.spool.session_id, "reason": str(exc)}
            )
            return False
        self._since_wake += written
        if self._since_wake >= recording.PART_RAW_BYTES and self._wake is not None:
            self._since_wake = 0
            self._wake()
        return True

    def output(self, data: bytes) -> bool:
        return self._write(recording.OUTPUT, data)

    def resize(self, width: int, height: int) -> bool:
        return self._write(recording.RESIZE, recording.resize_payload(width, height))

    def close(self, exit_code: int | None) -> None:
        os.close(self._fd)
        self.spool.finish(SessionEnd(ended=datetime.now(UTC), exit_code=exit_code))
        if self._wake is not None:
            self._wake()


class Spool:
    """Every session recorded on this node that the platform has not confirmed yet."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, meta: RecordingMeta) -> SessionSpool:
        directory = self.root / recording.check_session_id(meta.session_id)
        directory.mkdir(parents=True, mode=0o700)
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

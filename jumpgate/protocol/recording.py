"""Session recordings: what the node writes, how it travels, and asciicast v2 made from it.

The node records a session as *frames* (output bytes, or a resize, each with its time from the
start): a frame is 13 bytes of header then the bytes as they were. The node compresses the
frame stream as it writes it, into *parts*, each one gzip member, so a recording stored as its
parts laid end to end is one ``.gz`` file of the frame stream. asciicast v2 (the
format ``asciinema play`` reads) is made from the frames when a recording is read: turning
every byte into JSON on the node would cost six bytes of text per NUL and most of a core at
session speeds (docs/decisions/0009).

Tamper evidence: each part's SHA-256 is chained to the one before (``chain``), starting from
the session id, and the platform signs the final manifest with a key of the tenant.
"""

import codecs
import hashlib
import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

FRAME = struct.Struct(">cdI")
"""A frame's header: kind, seconds since the session started, payload length."""
OUTPUT, RESIZE = b"o", b"r"
MAX_PART_BYTES = 4 * 1024 * 1024 + 64 * 1024
"""A part is finished before it would be larger than this (with its fields in base64 it stays
under Lambda's 6 MB invoke payload)..."""
PART_RAW_BYTES = 32 * 1024 * 1024
"""...or hold more frame bytes than this (what a player holds of a part in memory)..."""
FLUSH_SECONDS = 2.0
"""...or once output has paused this long..."""
PART_SECONDS = 10.0
"""...or this long after it began: a live tail lags a busy session by no more. S3's 5 MiB
rule for multipart parts is met when a recording is assembled, not by the node."""
MAX_FRAME_BYTES = 1024 * 1024
"""Longer output is recorded as several frames, so a frame always fits in a part."""
SESSION_ID_CHARS = frozenset("0123456789abcdef-")


class RecordingMode(StrEnum):
    """Per tenant: where sessions are recorded and what a recording failure does."""

    NODE = "node"  # the node records; a failure to record is logged and the session goes on
    NODE_SYNC = "node-sync"  # the node records; the session ends if recording fails
    OFF = "off"


def check_session_id(value: str) -> str:
    """A session id is a UUID (lower-case hex and dashes); anything else is refused."""
    if not 32 <= len(value) <= 36 or not set(value) <= SESSION_ID_CHARS:
        raise ValueError(f"{value[:40]!r} is not a session id: see jump recordings ls")
    return value


class RecordingMeta(BaseModel):
    """What a recording is of; the node writes it, the proxy adds tenant and server id."""

    model_config = ConfigDict(frozen=True, defer_build=True)  # built when first used

    session_id: str
    kind: str  # shell | exec
    user: str = ""
    login: str = ""
    command: str | None = None
    started: datetime
    width: int = 80
    height: int = 24
    term: str = ""
    shell: str = ""
    server_id: str = ""
    nodename: str = ""


class PartInfo(BaseModel):
    """One stored part: its number (from 1), size, digest and chained digest."""

    model_config = ConfigDict(frozen=True, defer_build=True)  # built when first used

    index: int = Field(ge=1)
    size: int = Field(ge=0, le=MAX_PART_BYTES)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    chain: str = Field(pattern="^[0-9a-f]{64}$")


class SessionEnd(BaseModel):
    """How a recorded session ended: by itself (the node says), or completed by the platform."""

    model_config = ConfigDict(frozen=True, defer_build=True)  # built when first used

    ended: datetime
    exit_code: int | None = None
    synthesized: bool = False  # the node never came back: the platform closed it


class Manifest(BaseModel):
    """The signed list of a finished recording's parts."""

    model_config = ConfigDict(frozen=True, defer_build=True)  # built when first used

    version: int = 1
    tenant: str
    meta: RecordingMeta
    end: SessionEnd
    parts: list[PartInfo]
    key: str = ""  # the tenant's recording key (OpenSSH public form) that signed it
    signature: str = ""  # base64 Ed25519 over ``signed_bytes``

    def signed_bytes(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"signature"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @property
    def size(self) -> int:
        return sum(part.size for part in self.parts)


def genesis(session_id: str) -> str:
    """The chain value before part 1: binds the chain to its session."""
    return hashlib.sha256(b"jumpgate-recording:" + session_id.encode()).hexdigest()


def chained(previous: str, sha256: str) -> str:
    return hashlib.sha256(bytes.fromhex(previous) + bytes.fromhex(sha256)).hexdigest()


def part_info(index: int, data: bytes, previous: str) -> PartInfo:
    digest = hashlib.sha256(data).hexdigest()
    return PartInfo(index=index, size=len(data), sha256=digest, chain=chained(previous, digest))


def check_chain(session_id: str, parts: list[PartInfo]) -> str | None:
    """What is wrong with a list of parts (a gap, a broken chain), or None."""
    previous = genesis(session_id)
    for expected, part in enumerate(parts, start=1):
        if part.index != expected:
            return f"part {expected} is missing"
        if part.chain != chained(previous, part.sha256):
            return f"part {part.index} does not follow part {part.index - 1}"
        previous = part.chain
    return None


def decompress(part: bytes) -> bytes:
    """The frame bytes of one part; ``ValueError`` if it is not a gzip member."""
    try:
        return zlib.decompress(part, wbits=31)
    except zlib.error as exc:
        raise ValueError(f"not a recording part: {exc}") from exc


def frame_header(kind: bytes, at: float, length: int) -> bytes:
    return FRAME.pack(kind, at, length)


def resize_payload(width: int, height: int) -> bytes:
    return f"{width}x{height}".encode()


def frames(stream: bytes) -> Iterator[tuple[bytes, float, bytes]]:
    """The whole frames in ``stream``; a torn frame at the end (a crash mid-write) is left."""
    offset, end = 0, len(stream)
    while offset + FRAME.size <= end:
        kind, at, length = FRAME.unpack_from(stream, offset)
        start = offset + FRAME.size
        if start + length > end:
            return
        yield kind, at, stream[start : start + length]
        offset = start + length


class Decoder:
    """Frames of consecutive parts in, asciicast v2 events out.

    Output is decoded as UTF-8 across part and frame boundaries, as a terminal would read
    it; bytes that are not UTF-8 become U+FFFD, as asciinema's recorder does.
    """

    def __init__(self) -> None:
        self._pending = b""
        self._text = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, frame_bytes: bytes) -> Iterator[list[object]]:
        stream = self._pending + frame_bytes
        used = 0
        for kind, at, payload in frames(stream):
            used += FRAME.size + len(payload)
            if kind == OUTPUT:
                text = self._text.decode(payload)
                if text:
                    yield [round(at, 6), "o", text]
            elif kind == RESIZE:
                yield [round(at, 6), "r", payload.decode("ascii", "replace")]
        self._pending = stream[used:]


def asciicast_header(meta: RecordingMeta) -> dict[str, object]:
    header: dict[str, object] = {
        "version": 2,
        "width": meta.width,
        "height": meta.height,
        "timestamp": int(meta.started.timestamp()),
        "env": {"TERM": meta.term or "xterm", "SHELL": meta.shell or "/bin/sh"},
    }
    if meta.command is not None:
        header["command"] = meta.command
    header["title"] = f"{meta.user} as {meta.login}@{meta.nodename or meta.server_id}"
    return header


def asciicast_lines(meta: RecordingMeta, parts: Iterable[bytes]) -> Iterator[str]:
    """The recording as asciicast v2 lines (each ending in a newline), part by part."""
    yield json.dumps(asciicast_header(meta)) + "\n"
    decoder = Decoder()
    for part in parts:
        for event in decoder.feed(decompress(part)):
            yield json.dumps(event, ensure_ascii=False) + "\n"

"""The messages of a tunnel's recording channel (``ports.RECORDINGS``), as typed models.

The agent sends one JSON line per request, told apart by ``op`` (a part's bytes follow its
line); the proxy answers each with one JSON line: what was asked, or ``{"error": ...}``.
The wire form is the one agents already speak (decision 0009); these models name it, so
both ends build and read it from one place. ``decode_request`` gives ``MessageError``
(``tunnel_messages``), one line, for anything else.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from jumpgate.protocol.recording import MAX_PART_BYTES, RecordingMode, SessionEnd
from jumpgate.protocol.tunnel import MAX_LINE_BYTES
from jumpgate.protocol.tunnel_messages import MessageError

Digest = Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
SessionId = Annotated[str, Field(min_length=1, max_length=64)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    def line(self) -> bytes:
        """The request's line, newline included."""
        return self.model_dump_json().encode() + b"\n"


class SettingsRequest(_Request):
    """The tenant's recording settings (``SettingsAnswer``)."""

    op: Literal["hello"] = "hello"


class StatusRequest(_Request):
    """What the store already has of a session (``StatusAnswer``); opens it if new."""

    op: Literal["status"] = "status"
    session_id: SessionId
    meta: dict[str, JsonValue]  # ``RecordingMeta``; the proxy adds the server id and name


class PartRequest(_Request):
    """One sealed part; its ``size`` bytes follow the line (``StoredAnswer``)."""

    op: Literal["part"] = "part"
    session_id: SessionId
    previous: Digest  # the chained digest of the part before (the genesis for the first)
    index: int = Field(ge=1)
    size: int = Field(ge=0, le=MAX_PART_BYTES)
    sha256: Digest
    chain: Digest


class CompleteRequest(_Request):
    """Every part is stored and the session ended: the platform signs the manifest."""

    op: Literal["complete"] = "complete"
    session_id: SessionId
    parts: int = Field(ge=0)
    end: SessionEnd


class AliveRequest(_Request):
    """A long quiet session is still going."""

    op: Literal["alive"] = "alive"
    session_id: SessionId


RecordingRequest = Annotated[
    SettingsRequest | StatusRequest | PartRequest | CompleteRequest | AliveRequest,
    Field(discriminator="op"),
]
_REQUEST: TypeAdapter[RecordingRequest] = TypeAdapter(RecordingRequest)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class SettingsAnswer(_Answer):
    mode: RecordingMode = RecordingMode.NODE
    record_exec: bool = True


class StatusAnswer(_Answer):
    parts: int = Field(ge=0)  # parts the store has


class ErrorAnswer(_Answer):
    error: Annotated[str, Field(max_length=1024)]


def decode_request(line: bytes) -> RecordingRequest:
    """The request on ``line``, or ``MessageError`` in one line."""
    if len(line) > MAX_LINE_BYTES:
        raise MessageError(f"a request line is longer than {MAX_LINE_BYTES} bytes")
    try:
        return _REQUEST.validate_json(line)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise MessageError(f"bad request: {where}: {first['msg']}"[:300]) from None

"""The messages of a tunnel's control channel, and the versioned hello that opens it.

A node agent holds one session channel per tunnel to ``tunnel.CONTROL_SUBSYSTEM`` and both
ends write JSON lines of the models below, told apart by ``type`` (one discriminated union,
``Message``). The agent's first line is a ``Hello`` naming every protocol version it speaks;
the proxy answers ``Welcome`` with the highest version both speak, or ``Refusal`` naming
both sides' versions when there is none (an agent older or newer than any the proxy knows).
After that the agent reports itself (``Heartbeat``), sends its audit events (``AuditBatch``)
and asks for certificates (``RenewRequest``); each request carries an ``id`` its answer
(``Ack``, ``Tempfail``, ``Refusal``, ``Renewed``) repeats, so answers may come in any order.
The proxy pushes what the tenant's host CA signs the node should trust (``TrustUpdate``).

Two exchanges stay off the control channel because their channels carry other bytes after
them: the dial-back request on its own forwarded channel (``DialBackRequest``, answered by a
line ``ok`` or ``error ...``) and the first line of a dial-back data connection
(``DataHello``), which the proxy reads before SSH starts on that socket.

Every message decodes through ``decode`` (``MessageError``, one line, on anything else).
"""

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from jumpgate.protocol.resources import Lock, Role
from jumpgate.protocol.trust import NONCE_PATTERN, SignedTrust
from jumpgate.protocol.tunnel import DATA_HELLO

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSIONS",
    "Ack",
    "AuditBatch",
    "DataHello",
    "DialBackRequest",
    "Heartbeat",
    "Hello",
    "Message",
    "MessageError",
    "PolicyUpdate",
    "Refusal",
    "RenewRequest",
    "Renewed",
    "RolesAnswer",
    "RolesRequest",
    "SessionOrigin",
    "Tempfail",
    "TrustUpdate",
    "Welcome",
    "choose_version",
    "decode",
    "encode",
    "mismatch",
]

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
"""The control-channel versions this release speaks, oldest first."""
MAX_MESSAGE_BYTES = 256 * 1024
"""The longest line either end reads; an audit batch is packed to stay under it."""
MAX_AUDIT_EVENTS = 100
"""Events in one ``AuditBatch`` at most."""
MAX_EVENT_BYTES = 16 * 1024
"""One audit event, JSON-encoded, at most (the agent cuts its events to 12 KiB)."""

RequestId = Annotated[int, Field(ge=0, lt=2**53)]
Short = Annotated[str, Field(max_length=64)]
Reason = Annotated[str, Field(max_length=1024)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hello(_Message):
    """The agent's first line: what it speaks and what it is."""

    type: Literal["hello"] = "hello"
    versions: list[Annotated[int, Field(ge=1, lt=2**31)]] = Field(min_length=1, max_length=32)
    agent_version: Short = ""  # the package version, for people reading the log
    capabilities: list[Short] = Field(default_factory=list, max_length=32)
    nonce: Annotated[str, Field(pattern=NONCE_PATTERN)] | None = None  # echoed by ``TrustUpdate``


class Welcome(_Message):
    """The proxy's answer to a ``Hello`` it can speak: the version both will use."""

    type: Literal["welcome"] = "welcome"
    version: int
    proxy_version: Short = ""
    capabilities: list[Short] = Field(default_factory=list, max_length=32)


class Heartbeat(_Message):
    """What the node says of itself; sent when it changes (liveness is the tunnel's own)."""

    type: Literal["heartbeat"] = "heartbeat"
    hostname: Annotated[str, Field(max_length=253)] = ""
    addr: Short = ""
    version: Short = ""
    labels: dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=255)]] = (
        Field(default_factory=dict, max_length=256)
    )


class AuditBatch(_Message):
    """Some of the node's own audit events; the proxy takes them event by event (a bad
    event is replaced by ``audit.dropped``, never refusing the batch), so each is any JSON."""

    type: Literal["audit"] = "audit"
    id: RequestId
    events: list[JsonValue] = Field(max_length=MAX_AUDIT_EVENTS)


class RenewRequest(_Message):
    """A fresh host certificate for the key this tunnel authenticated with."""

    type: Literal["renew"] = "renew"
    id: RequestId


class Ack(_Message):
    """A request was done (an audit batch recorded)."""

    type: Literal["ack"] = "ack"
    id: RequestId


class Tempfail(_Message):
    """Not now: the same request sent later may succeed (the platform out of reach, a
    budget spent). Without ``id`` the proxy ends the channel: the node sent too much."""

    type: Literal["tempfail"] = "tempfail"
    id: RequestId | None = None
    reason: Reason


class Refusal(_Message):
    """Refused as sent: sending it again will not help. Without ``id`` it answers the hello
    or a line that was no request."""

    type: Literal["refusal"] = "refusal"
    id: RequestId | None = None
    reason: Reason


class Renewed(_Message):
    """The answer to ``RenewRequest``: the new host certificate, OpenSSH format."""

    type: Literal["renewed"] = "renewed"
    id: RequestId
    certificate: Annotated[str, Field(max_length=16 * 1024)]


class TrustUpdate(_Message):
    """The tenant's trust document as its host CA signed it (``protocol.trust``), answering
    the hello's nonce; the agent verifies it with the host CA keys it holds."""

    type: Literal["trust"] = "trust"
    signed: SignedTrust


class PolicyUpdate(_Message):
    """The tenant's locks in force and the revision of its roles, pushed by the proxy when
    the tunnel comes up and whenever either changes (docs/decisions/0034). The node ends the
    connections a new lock matches, refuses new channels of them, and drops the role
    definitions it holds when ``roles_revision`` moves."""

    type: Literal["policy"] = "policy"
    locks: list[Lock] = Field(default_factory=list, max_length=1000)
    roles_revision: Short = ""


class RolesRequest(_Message):
    """The node asks for the current definitions of the roles a certificate names."""

    type: Literal["roles_request"] = "roles_request"
    id: RequestId
    names: list[Annotated[str, Field(max_length=63)]] = Field(max_length=64)


class RolesAnswer(_Message):
    """The answer to ``RolesRequest``: the roles that exist of those asked for."""

    type: Literal["roles"] = "roles"
    id: RequestId
    roles: list[Role] = Field(max_length=64)


Message = Annotated[
    Hello
    | Welcome
    | Heartbeat
    | AuditBatch
    | RenewRequest
    | Ack
    | Tempfail
    | Refusal
    | Renewed
    | TrustUpdate
    | PolicyUpdate
    | RolesRequest
    | RolesAnswer,
    Field(discriminator="type"),
]
_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


class MessageError(ValueError):
    """A line that is not a message this release reads; ``str()`` says why in one line."""


def encode(message: _Message) -> bytes:
    """One line of the control channel."""
    return message.model_dump_json().encode() + b"\n"


def decode(line: bytes | str) -> Message:
    """The message on ``line``, or ``MessageError`` saying in one line what is wrong."""
    size = len(line.encode() if isinstance(line, str) else line)
    if size > MAX_MESSAGE_BYTES:
        raise MessageError(f"a message is longer than {MAX_MESSAGE_BYTES} bytes ({size})")
    try:
        return _MESSAGE.validate_json(line)
    except ValidationError as exc:
        raise MessageError(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return f"not JSON: {first['msg']}"[:200]
    if first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", "")
        return f"unknown message type {str(tag)[:40]!r}"
    if first["type"] == "union_tag_not_found":
        return "a message without a type"
    if not first["loc"]:
        return "a message must be a JSON object with a type"
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"[:200]


def choose_version(ours: tuple[int, ...], theirs: list[int]) -> int | None:
    """The highest version both ends speak, or None."""
    common = set(ours) & set(theirs)
    return max(common) if common else None


def mismatch(proxy: list[int] | tuple[int, ...], agent: list[int] | tuple[int, ...]) -> str:
    """One line naming both ends' versions and which end to upgrade (the older one)."""
    older = "agent (jumpgate on the node)" if max(agent) < max(proxy) else "platform's proxy"
    return (
        f"no tunnel protocol version in common: the proxy speaks {_listed(proxy)}, "
        f"the agent speaks {_listed(agent)}; upgrade the {older}"
    )


def _listed(versions: list[int] | tuple[int, ...]) -> str:
    return ", ".join(str(v) for v in sorted(set(versions))[:8])


class DialBackRequest(_Message):
    """The proxy's request on a dial-back channel: dial its data port with this token."""

    port: Annotated[int, Field(gt=0, lt=65536)]
    token: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")]

    @classmethod
    def decode(cls, line: bytes) -> "DialBackRequest":
        """The request on ``line``, or ``MessageError`` in one line."""
        try:
            return cls.model_validate_json(line)
        except ValidationError as exc:
            raise MessageError(f"bad dial-back request: {_first_error(exc)}") from None


_TOKEN = re.compile(rb"^[A-Za-z0-9]{1,128}$")


class DataHello(_Message):
    """The first line of a dial-back data connection: ``DATA_HELLO``, the token, a newline.

    It stays bytes, not JSON: the proxy matches its prefix before anything is parsed."""

    token: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9]+$")]

    def line(self) -> bytes:
        return DATA_HELLO + self.token.encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> "DataHello":
        """The hello on ``line`` (newline included or not), or ``MessageError``."""
        if not line.startswith(DATA_HELLO):
            raise MessageError("not a data connection hello")
        token = line.removeprefix(DATA_HELLO).rstrip(b"\n")
        if not _TOKEN.match(token):
            raise MessageError("a data connection hello without a usable token")
        return cls(token=token.decode())


_SESSION_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ORIGIN = re.compile(rf"^({_SESSION_ID})@(.{{1,45}})$")


class SessionOrigin(_Message):
    """Where a session comes from, as the proxy that opened it knows it (decision 0030): its
    ``session_id`` in the proxy's audit events and the user's own address. The node names
    its events of the session with that id, and sets ``SSH_CONNECTION`` from that address.

    It travels in the originator fields of the channel the proxy opens to the node
    (``forwarded-tcpip``: the dial-back request's, or the session's own inside the tunnel;
    ``direct-tcpip`` from a peer proxy), which RFC 4254 gives to the originator's address
    and port: ``<session_id>@<address>`` and the port. Only the proxy holding the node's
    tunnel (or an authenticated peer) opens such channels, so nothing else can claim it;
    an agent of an older release ignores those fields, so there is nothing to negotiate."""

    session_id: Annotated[str, Field(pattern=f"^{_SESSION_ID}$")]
    addr: Annotated[str, Field(min_length=1, max_length=45)]  # the user's IP address
    port: Annotated[int, Field(ge=0, lt=65536)]

    def originator(self) -> tuple[str, int]:
        """The channel's originator address and port that carry this origin."""
        return f"{self.session_id}@{self.addr}", self.port

    @classmethod
    def from_originator(cls, host: object, port: object) -> "SessionOrigin | None":
        """The origin a channel's originator fields carry, or None (a proxy of an older
        release, or anything else: never an error, the session then gets its own id)."""
        if not isinstance(host, str) or not isinstance(port, int):
            return None
        found = _ORIGIN.fullmatch(host)
        if found is None:
            return None
        try:
            ipaddress.ip_address(found.group(2))
            return cls(session_id=found.group(1), addr=found.group(2), port=port)
        except ValueError:
            return None

    @classmethod
    def of(cls, session_id: str, remote_addr: str) -> "SessionOrigin | None":
        """The origin of session ``session_id`` from a user at ``remote_addr`` (``ip:port``,
        as the proxy's events write it); None if either is not one."""
        addr, _, port = remote_addr.rpartition(":")
        if not port.isdigit():
            return None
        return cls.from_originator(f"{session_id}@{addr}", int(port))

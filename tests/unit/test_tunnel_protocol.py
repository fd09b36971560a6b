"""The tunnel's control-channel messages (``protocol.tunnel_messages``): every message
round-trips, a hello finds the highest common version or is refused naming both sides'
versions, and bad, oversized or unknown lines give one-line errors."""

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import certs
from jumpgate.protocol.recording import SessionEnd
from jumpgate.protocol.recording_messages import (
    AliveRequest,
    CompleteRequest,
    PartRequest,
    RecordingRequest,
    SettingsRequest,
    StatusRequest,
    decode_request,
)
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel import DATA_HELLO, MAX_LINE_BYTES
from jumpgate.protocol.tunnel_messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSIONS,
    Ack,
    AuditBatch,
    DataHello,
    DialBackRequest,
    Heartbeat,
    Hello,
    Message,
    MessageError,
    Refusal,
    Renewed,
    RenewRequest,
    Tempfail,
    TrustUpdate,
    Welcome,
    choose_version,
    decode,
    encode,
    mismatch,
)

SIGNED = SignedTrust(
    payload="eyJ0ZW5hbnQiOiJhY21lIn0=",
    signature="c2lnbmF0dXJl",
    signer=certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key()),
)
MESSAGES: list[Message] = [
    Hello(versions=[1], agent_version="1.2.3", capabilities=["trust-push"], nonce="n" * 32),
    Welcome(version=1, proxy_version="1.2.3", capabilities=["trust-push"]),
    Heartbeat(hostname="web-1", addr="10.0.0.5", version="1.2.3", labels={"env": "prod"}),
    AuditBatch(
        id=7,
        events=[
            {"type": "exec", "time": datetime.now(UTC).isoformat(), "fields": {"user": "alice"}},
            3,
        ],
    ),
    RenewRequest(id=8),
    Ack(id=7),
    Tempfail(id=7, reason="audit: over budget: try again later"),
    Tempfail(reason="more than 20 heartbeats at once"),
    Refusal(id=8, reason="renewal refused: one at a time"),
    Refusal(reason="no tunnel protocol version in common"),
    Renewed(id=8, certificate="ssh-ed25519-cert-v01@openssh.com AAAA"),
    TrustUpdate(signed=SIGNED),
]


@pytest.mark.parametrize("message", MESSAGES, ids=[f"{m.type}-{n}" for n, m in enumerate(MESSAGES)])
def test_every_message_round_trips_as_one_line(message: Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert decode(line) == message
    assert json.loads(line)["type"] == message.type


def test_the_side_channel_messages_round_trip() -> None:
    request = DialBackRequest(port=3026, token="ab12" * 8)
    assert DialBackRequest.decode(request.model_dump_json().encode() + b"\n") == request
    hello = DataHello(token="ab12" * 8)
    assert hello.line() == DATA_HELLO + b"ab12" * 8 + b"\n"
    assert DataHello.decode(hello.line()) == hello


def test_a_hello_picks_the_highest_version_both_speak() -> None:
    assert choose_version((1, 2, 3), [2, 3, 4]) == 3
    assert choose_version(PROTOCOL_VERSIONS, [*PROTOCOL_VERSIONS, 99]) == max(PROTOCOL_VERSIONS)
    assert choose_version((1,), [2]) is None


def test_a_peer_announcing_only_an_unknown_newer_version_is_refused_naming_both() -> None:
    newer = max(PROTOCOL_VERSIONS) + 1
    assert choose_version(PROTOCOL_VERSIONS, [newer]) is None
    said = mismatch(PROTOCOL_VERSIONS, [newer])
    assert f"the proxy speaks {max(PROTOCOL_VERSIONS)}" in said
    assert f"the agent speaks {newer}" in said
    assert said.endswith("upgrade the platform's proxy")
    older = mismatch([newer], PROTOCOL_VERSIONS)  # a newer proxy: this agent is the old one
    assert older.endswith("upgrade the agent (jumpgate on the node)")
    assert "\n" not in said + older


BAD = [
    (b"not json", "not JSON"),
    (b"[1, 2]", "a message must be a JSON object with a type"),
    (b'{"id": 1}', "a message without a type"),
    (b'{"type": "shutdown"}', "unknown message type 'shutdown'"),
    (b'{"type": "ack"}', "ack.id: Field required"),
    (b'{"type": "ack", "id": -1}', "ack.id: Input should be greater than or equal to 0"),
    (b'{"type": "ack", "id": 1, "extra": 2}', "ack.extra: Extra inputs are not permitted"),
    (b'{"type": "hello", "versions": []}', "hello.versions: List should have at least 1 item"),
    (
        json.dumps({"type": "audit", "id": 1, "events": [{}] * 101}).encode(),
        "audit.events: List should have at most 100 items",
    ),
    (
        json.dumps({"type": "heartbeat", "labels": {"k": "v" * 256}}).encode(),
        "heartbeat.labels.k: String should have at most 255 characters",
    ),
    (b"[" * 5000 + b"]" * 5000, "not JSON"),
    (b'{"type": "ack", "id": 1}' + b" " * MAX_MESSAGE_BYTES, "longer than"),
]


@pytest.mark.parametrize(
    ("line", "said"),
    BAD,
    ids=[
        "not-json",
        "an-array",
        "no-type",
        "unknown-type",
        "missing-field",
        "negative-id",
        "extra-field",
        "no-versions",
        "too-many-events",
        "label-too-long",
        "deeply-nested",
        "oversized",
    ],
)
def test_a_bad_line_gives_a_one_line_error(line: bytes, said: str) -> None:
    with pytest.raises(MessageError) as raised:
        decode(line)
    assert said in str(raised.value)
    assert "\n" not in str(raised.value)
    assert len(str(raised.value)) <= 200


@pytest.mark.parametrize(
    "line",
    [b'{"port": 0, "token": "ab"}', b'{"port": 22, "token": "a b"}', b"{}", b"x"],
    ids=["port-zero", "token-not-alnum", "empty", "not-json"],
)
def test_a_bad_dial_back_request_gives_a_one_line_error(line: bytes) -> None:
    with pytest.raises(MessageError) as raised:
        DialBackRequest.decode(line)
    assert str(raised.value).startswith("bad dial-back request: ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "line",
    [b"SSH-2.0-x\r\n", DATA_HELLO + b"\n", DATA_HELLO + b"to ken\n"],
    ids=["no-prefix", "no-token", "bad-token"],
)
def test_a_bad_data_hello_is_refused(line: bytes) -> None:
    with pytest.raises(MessageError):
        DataHello.decode(line)


SID = "0b9e8c1e-6a4e-4c4f-9f57-2d1f5b0f3c11"
RECORDING_REQUESTS: list[tuple[RecordingRequest, dict[str, object]]] = [
    (SettingsRequest(), {"op": "hello"}),
    (StatusRequest(session_id=SID, meta={"kind": "shell"}), {"op": "status", "meta": {}}),
    (
        PartRequest(
            session_id=SID, previous="a" * 64, index=1, size=3, sha256="b" * 64, chain="c" * 64
        ),
        {"op": "part", "index": 1, "size": 3},
    ),
    (
        CompleteRequest(session_id=SID, parts=2, end=SessionEnd(ended=datetime.now(UTC))),
        {"op": "complete", "parts": 2},
    ),
    (AliveRequest(session_id=SID), {"op": "alive"}),
]


@pytest.mark.parametrize(
    ("request_", "wire"), RECORDING_REQUESTS, ids=[r.op for r, _ in RECORDING_REQUESTS]
)
def test_recording_requests_keep_the_wire_form_agents_speak(
    request_: RecordingRequest, wire: dict[str, object]
) -> None:
    line = request_.line()
    assert decode_request(line) == request_
    sent = json.loads(line)
    for key, value in wire.items():
        assert sent[key] == value or (isinstance(value, dict) and isinstance(sent[key], dict))


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b'{"op": "delete", "session_id": "x"}', "bad request: "),
        (b'{"op": "part", "session_id": "x"}', "bad request: part.previous: Field required"),
        (b"x" * (MAX_LINE_BYTES + 1), "longer than"),
    ],
    ids=["unknown-op", "missing-field", "oversized"],
)
def test_a_bad_recording_request_gives_a_one_line_error(line: bytes, said: str) -> None:
    with pytest.raises(MessageError) as raised:
        decode_request(line)
    assert said in str(raised.value)
    assert "\n" not in str(raised.value)

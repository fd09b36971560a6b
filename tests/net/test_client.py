"""The typed API client against a real HTTPS server on 127.0.0.1 (issue 15, item 4).

The server is a small scripted one: each test says what a path answers, and the server
records every request (line, headers, body), every TLS handshake and the name each asked
for (SNI). Both faces of the client (``Client`` for the CLIs, ``AsyncClient`` for the node
agent) are run through the same cases.
"""

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.edge_proxy import tls
from jumpgate.protocol import calls, certs, models, signing
from jumpgate.protocol.calls import Call
from jumpgate.protocol.client import (
    APIError,
    AsyncClient,
    Client,
    ClientError,
    Credentials,
    InvalidAnswer,
)

pytestmark = pytest.mark.net

T = TypeVar("T")

Answer = tuple[int, str, bytes]  # status, content type, body


class Scripted(ThreadingHTTPServer):
    """HTTPS with keep-alive; ``answers`` maps a request target to what it answers."""

    daemon_threads = True

    def __init__(self, directory: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        cert, key = tls.ensure_certificate(directory, "localhost")
        self.context = tls.server_context(cert, key)
        self.context.sni_callback = self._sni
        self.answers: dict[str, Answer] = {}
        self.requests: list[dict[str, Any]] = []
        self.handshakes = 0
        self.names: list[str | None] = []
        self.stall = False  # never answer: for timeouts
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _sni(self, _: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        self.names.append(name)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, address = super().get_request()
        raw.settimeout(5)
        wrapped = self.context.wrap_socket(raw, server_side=True)
        self.handshakes += 1
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-handshake or mid-stall is not the test's failure."""

    def answer(self, target: str, status: int, payload: object, kind: str = "") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.answers[target] = (status, kind or "application/json", body)

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client may reuse the connection
    server: Scripted

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {"method": self.command, "target": self.path, "headers": self.headers, "body": body}
        )
        if self.server.stall:
            time.sleep(3)
            return
        status, kind, payload = self.server.answers.get(
            self.path, (404, "application/json", b'{"detail": "no such route"}')
        )
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if status != 204:
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _any


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Scripted]:
    running = Scripted(tmp_path / "tls")
    yield running
    running.close()


FACES = pytest.mark.parametrize("face", ["sync", "async"])


def send_all(face: str, proxy: str, batch: list[Call[Any]], **options: Any) -> list[Any]:
    """Send ``batch`` in order on one client of ``face``."""
    if face == "sync":
        with Client(proxy, insecure=True, **options) as client:
            return [client.send(call) for call in batch]

    async def sent() -> list[Any]:
        async with AsyncClient(proxy, insecure=True, **options) as client:
            return [await client.send(call) for call in batch]

    return asyncio.run(sent())


def send_one(face: str, proxy: str, call: Call[T], **options: Any) -> T:
    answer: T = send_all(face, proxy, [call], **options)[0]
    return answer


USERS = models.UserList(
    users=[
        models.UserInfo(
            name="alice",
            roles=[models.Role.ADMIN],
            logins=["root"],
            status="active",
            created=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        ),
        models.UserInfo(
            name="bob",
            roles=[models.Role.ACCESS],
            logins=[],
            status="locked",
            created=datetime(2026, 12, 2, 10, 0, tzinfo=UTC),
            lock="left (until 2026-12-04T00:00:00+00:00)",
        ),
    ]
)


@FACES
def test_answers_are_read_into_the_routes_models(server: Scripted, face: str) -> None:
    server.answer("/v1/users", 200, json.loads(USERS.model_dump_json()))
    users = send_one(face, f"127.0.0.1:{server.port}", calls.users())
    assert users == USERS.users
    assert isinstance(users[1].created, datetime)
    assert users[1].roles == [models.Role.ACCESS]


@FACES
def test_a_field_this_version_does_not_know_is_ignored(server: Scripted, face: str) -> None:
    """A newer platform may add fields: an older client still reads what it knows."""
    status = {"cluster_name": "acme", "server_version": "9", "ca_pin": "sha256:ab", "cas": []}
    server.answer("/v1/status", 200, {**status, "added_later": True})
    assert send_one(face, f"127.0.0.1:{server.port}", calls.status()).cluster_name == "acme"


@FACES
def test_a_body_goes_as_the_models_json_and_only_what_was_set(server: Scripted, face: str) -> None:
    created = {
        "token": "t" * 20,
        "roles": ["node"],
        "expires": "2026-12-03T10:00:00Z",
        "ca_pin": "sha256:ab",
    }
    server.answer("/v1/tokens", 201, created)
    body = models.TokenCreateRequest.model_validate({"ttl_seconds": 600})
    answer = send_one(face, f"127.0.0.1:{server.port}", calls.add_token(body))
    assert answer.expires == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    [request] = server.requests
    assert request["method"] == "POST"
    assert json.loads(request["body"]) == {"ttl_seconds": 600}
    assert request["headers"]["Content-Type"] == "application/json"


@FACES
def test_a_path_parameter_is_one_segment_whatever_it_holds(server: Scripted, face: str) -> None:
    """``bob/lock`` names a user, and must not reach bob's lock."""
    server.answer("/v1/users/bob%2Flock", 204, b"")
    assert send_one(face, f"127.0.0.1:{server.port}", calls.remove_user("bob/lock")) is None
    assert [r["target"] for r in server.requests] == ["/v1/users/bob%2Flock"]
    assert server.requests[0]["method"] == "DELETE"


BAD_ANSWERS = [
    (200, "application/json", b'{"users": [{"name": 1}]}', InvalidAnswer, "not UserList"),
    (200, "text/html", b"<html>welcome</html>", InvalidAnswer, "not UserList"),
    (502, "text/html", b"<html>bad gateway</html>", APIError, "answered HTTP 502"),
    (
        403,
        "application/problem+json",
        b'{"type": "urn:jumpgate:forbidden", "title": "Forbidden", "status": 403,'
        b' "detail": "alice is not an admin:\\nask one"}',
        APIError,
        "alice is not an admin",
    ),
]


@FACES
@pytest.mark.parametrize(
    ("status", "kind", "body", "error", "says"),
    BAD_ANSWERS,
    ids=["wrong-shape", "not-json", "gateway-page", "problem"],
)
def test_a_bad_answer_is_one_line_saying_what_came(
    server: Scripted,
    face: str,
    status: int,
    kind: str,
    body: bytes,
    error: type[ClientError],
    says: str,
) -> None:
    server.answer("/v1/users", status, body, kind)
    with pytest.raises(error, match=says) as raised:
        send_one(face, f"127.0.0.1:{server.port}", calls.users())
    assert "Traceback" not in str(raised.value)
    if isinstance(raised.value, APIError):
        assert raised.value.status == status
    if status == 403:
        assert isinstance(raised.value, APIError)
        assert raised.value.problem_type == "urn:jumpgate:forbidden"
    else:
        assert "\n" not in str(raised.value)


@FACES
def test_one_connection_carries_many_calls(server: Scripted, face: str) -> None:
    """The old client dialled and shook hands for every call: now a client keeps its
    connection. Clients made per call show what the counter counts."""
    server.answer("/webapi/ping", 200, _ping())
    proxy = f"127.0.0.1:{server.port}"
    answers = send_all(face, proxy, [calls.ping() for _ in range(10)])
    assert [a.cluster_name for a in answers] == ["acme"] * 10
    assert len(server.requests) == 10
    assert server.handshakes == 1
    for _ in range(3):
        send_one(face, proxy, calls.ping())
    assert server.handshakes == 4


@FACES
def test_a_localhost_name_is_dialled_on_loopback_and_sent_as_sni_and_host(
    server: Scripted, face: str
) -> None:
    server.answer("/webapi/ping", 200, _ping())
    send_one(face, f"acme.localhost:{server.port}", calls.ping())
    assert server.names == ["acme.localhost"]
    assert server.requests[0]["headers"]["Host"] == f"acme.localhost:{server.port}"


@FACES
def test_a_signed_call_is_signed_as_it_goes_on_the_wire(server: Scripted, face: str) -> None:
    """The server checks the signature against the path and query it received."""
    key = ed25519.Ed25519PrivateKey.generate()
    page: dict[str, object] = {"events": [], "cursor": None}
    query = [("from", "2026-12-03T10:00:00+00:00"), ("type", "user.login"), ("user", "a b")]
    target = "/v1/audit/events?from=2026-12-03T10%3A00%3A00%2B00%3A00&type=user.login&user=a+b"
    server.answer(target, 200, page)
    credentials = Credentials("the-certificate", key)
    proxy = f"acme.localhost:{server.port}"
    answer = send_one(face, proxy, calls.audit_events(query), credentials=credentials)
    assert answer.events == []
    [request] = server.requests
    headers = request["headers"]
    path, _, sent_query = request["target"].partition("?")
    signed = signing.SignedRequest(
        method="GET",
        host=proxy,
        path=path,
        query=sent_query,
        timestamp=int(headers[signing.HEADER_TIME]),
        nonce=headers[signing.HEADER_NONCE],
        body=b"",
    )
    assert headers[signing.HEADER_CERT] == "the-certificate"
    assert signing.verify(key.public_key(), signed, headers[signing.HEADER_SIGNATURE])
    assert not signing.verify(
        ed25519.Ed25519PrivateKey.generate().public_key(),
        signed,
        headers[signing.HEADER_SIGNATURE],
    )


@FACES
def test_nobody_listening_is_one_line_saying_what_to_check(face: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ClientError, match="is jumpgate start running there") as raised:
        send_one(face, f"127.0.0.1:{port}", calls.ping())
    assert "\n" not in str(raised.value)
    assert f"127.0.0.1:{port}" in str(raised.value)


@FACES
def test_a_server_that_never_answers_times_out(server: Scripted, face: str) -> None:
    server.stall = True
    started = time.monotonic()
    with pytest.raises(ClientError, match="cannot reach"):
        send_one(face, f"127.0.0.1:{server.port}", calls.ping(), timeout=0.5)
    assert time.monotonic() - started < 2.5


def test_a_request_body_the_models_refuse_is_said_as_the_platform_says_it() -> None:
    """The CLIs build bodies with the models now: what the platform answered 400 before is
    refused before sending, in the same words (``cli.common.run`` prints it)."""
    from pydantic import ValidationError

    from jumpgate.protocol.client import invalid_detail

    with pytest.raises(ValidationError) as raised:
        models.SignupRequest(token="short", password="p" * 12)
    assert invalid_detail(raised.value) == (
        "token: must be 16 to 256 letters, digits, '-' or '_' (5 given)"
    )


def _ping() -> dict[str, Any]:
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    return {
        "server_version": "1",
        "protocol_version": "1",
        "cluster_name": "acme",
        "ssh_public_addr": "acme.localhost:3023",
        "tunnel_public_addr": "acme.localhost:3024",
        "proxy_host_keys": [key],
        "unused": base64.b64encode(b"x").decode(),
    }


@FACES
def test_an_audit_event_keeps_the_fields_of_its_type(server: Scripted, face: str) -> None:
    """Fields of an event's type ride along as extras: reading a page must not drop them
    (``jumpctl audit search`` prints them)."""
    event = {
        "type": "user.login",
        "code": "J1000I",
        "time": "2026-12-03T10:00:00Z",
        "id": "e1",
        "tenant": "acme",
        "user": "alice",
        "method": "password+totp",
    }
    server.answer("/v1/audit/events?limit=1", 200, {"events": [event], "cursor": "next"})
    page = send_one(face, f"127.0.0.1:{server.port}", calls.audit_events([("limit", "1")]))
    assert page.cursor == "next"
    [read] = page.events
    assert read.model_dump(mode="json")["method"] == "password+totp"
    assert read.time == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@FACES
def test_an_ssh_port_given_for_the_web_address_says_so(face: str) -> None:
    """``jump login --proxy=acme.localhost:3023`` (the SSH port): the answer was the TLS
    library's "WRONG_VERSION_NUMBER", and "is jumpgate start running there?" (it is)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def speak_ssh() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_compatible Jumpgate\r\n")
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(4096)

        threading.Thread(target=speak_ssh, daemon=True).start()
        with pytest.raises(ClientError) as raised:
            send_one(face, f"127.0.0.1:{port}", calls.ping())
    assert str(raised.value) == (
        f"127.0.0.1:{port} does not speak HTTPS (an SSH port?): give the cluster's web "
        "address, e.g. acme.example.sh:3080"
    )

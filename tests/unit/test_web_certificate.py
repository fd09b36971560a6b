"""``--insecure`` bound to the web certificate the host CA vouches for (issue 14, item 1).

With a set of vouched certificate digests, the client checks the TLS peer certificate right
after the handshake and writes nothing (no request line, no body, no token) to a server that
presents another one. A real TLS server on loopback records every byte it is sent.
"""

import asyncio
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from jumpgate.edge_proxy import tls
from jumpgate.node_agent.errors import PinMismatch
from jumpgate.node_agent.join import vouch
from jumpgate.protocol import models, routes
from jumpgate.protocol.calls import Call
from jumpgate.protocol.client import (
    AsyncClient,
    Client,
    ClientError,
    UnvouchedCertificate,
    certificate_sha256,
)
from jumpgate.protocol.trust import TrustDocument

SECRET = "the-join-token-nobody-else-may-read"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def _any(payload: object) -> object:
    return payload


JOIN = Call(
    routes.JOIN,
    _any,
    "any JSON",
    body=models.JoinRequest(token=SECRET, public_key=KEY, nodename="web1"),
)
CA = Call(routes.CA, _any, "any JSON")


def send(client: Client | AsyncClient, call: Call[object]) -> object:
    """``call`` through either client: the sync one wraps sockets, the async one memory BIOs,
    and the certificate check must hold in both."""
    if isinstance(client, Client):
        with client:
            return client.send(call)

    async def sent() -> object:
        async with client:
            return await client.send(call)

    return asyncio.run(sent())


CLIENTS = pytest.mark.parametrize("kind", [Client, AsyncClient], ids=["sync", "async"])


class Server:
    """A one-request-at-a-time HTTPS server that keeps what each connection sent it."""

    def __init__(self, directory: Path) -> None:
        cert, key = tls.ensure_certificate(directory, "localhost")
        self.der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        self.context = tls.server_context(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self._stop = threading.Event()
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with raw:
                raw.settimeout(5)
                try:
                    conn = self.context.wrap_socket(raw, server_side=True)
                except (OSError, ssl.SSLError):  # the client hung up during the handshake
                    self.received.append(b"")
                    continue
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        ),
                        0,
                    )
                    while len(rest) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        rest += chunk
                    data = head + b"\r\n\r\n" + rest if head else data
                    if head:
                        body = b'{"ok":true}'
                        conn.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                        )
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    self.received.append(data)
                    conn.close()

    def connections(self, count: int) -> list[bytes]:
        """What the first ``count`` connections sent, once the server is done with them."""
        deadline = time.monotonic() + 10
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "tls")
    yield running
    running.close()


def test_the_digest_is_sha256_of_the_der_certificate(server: Server) -> None:
    assert certificate_sha256(server.der) == hashlib.sha256(server.der).hexdigest()


@CLIENTS
def test_a_vouched_certificate_carries_the_request(
    server: Server, kind: type[Client | AsyncClient]
) -> None:
    client = kind(
        f"127.0.0.1:{server.port}", insecure=True, web_certificates=[certificate_sha256(server.der)]
    )
    assert send(client, JOIN) == {"ok": True}
    assert SECRET.encode() in server.connections(1)[0]


@CLIENTS
def test_an_unvouched_certificate_gets_no_byte_of_the_request(
    server: Server, kind: type[Client | AsyncClient]
) -> None:
    other = "0" * 64
    client = kind(f"127.0.0.1:{server.port}", insecure=True, web_certificates=[other])
    with pytest.raises(UnvouchedCertificate) as raised:
        send(client, JOIN)
    assert raised.value.digest == certificate_sha256(server.der)
    assert f"127.0.0.1:{server.port}" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert server.accepted == 1
    assert server.connections(1) == [b""], "the client wrote to a certificate nobody vouched for"


@CLIENTS
def test_an_empty_vouched_set_vouches_for_nothing(
    server: Server, kind: type[Client | AsyncClient]
) -> None:
    client = kind(f"127.0.0.1:{server.port}", insecure=True, web_certificates=[])
    with pytest.raises(UnvouchedCertificate):
        send(client, CA)
    assert server.connections(1) == [b""]


@CLIENTS
def test_without_a_vouched_set_insecure_accepts_the_certificate_as_before(
    server: Server, kind: type[Client | AsyncClient]
) -> None:
    assert send(kind(f"127.0.0.1:{server.port}", insecure=True), CA) == {"ok": True}


@CLIENTS
def test_without_insecure_a_self_signed_certificate_fails_verification(
    server: Server, kind: type[Client | AsyncClient]
) -> None:
    with pytest.raises(ClientError, match="cannot verify the HTTPS certificate") as raised:
        send(kind(f"127.0.0.1:{server.port}"), CA)
    # the agent tells a mistake to fix from a platform to wait for by this cause
    assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)


def test_binding_drops_the_connections_opened_unchecked(server: Server) -> None:
    """A connection opened before the client was bound was never checked: the bound client
    dials again, and that connection's certificate is checked before the token goes."""
    with Client(f"127.0.0.1:{server.port}", insecure=True) as client:
        assert client.send(CA) == {"ok": True}
        client.web_certificates = ["0" * 64]
        with pytest.raises(UnvouchedCertificate):
            client.send(JOIN)
    assert SECRET.encode() not in b"".join(server.connections(2))


def _document(**changes: object) -> TrustDocument:
    fields: dict[str, object] = {
        "tenant": "acme",
        "user_ca_keys": [],
        "host_ca_keys": [],
        "proxy_host_keys": [],
        "tunnel_public_addr": "acme.localhost:3024",
        "ssh_public_addr": "acme.localhost:3023",
        "issued": datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
    }
    return TrustDocument.model_validate({**fields, **changes})


PIN = "sha256:" + "ab" * 32


def test_insecure_takes_the_certificates_the_document_names() -> None:
    digest = "cd" * 32
    client = AsyncClient("acme.localhost:3080", insecure=True)
    vouch(client, _document(web_certificate_sha256=[digest]), PIN)
    assert client.web_certificates == frozenset({digest})


def test_insecure_with_a_document_naming_no_certificate_is_refused() -> None:
    client = AsyncClient("acme.localhost:3080", insecure=True)
    with pytest.raises(PinMismatch, match="drop --insecure") as raised:
        vouch(client, _document(), PIN)
    assert PIN in str(raised.value)
    assert client.web_certificates is None


def test_verified_tls_needs_no_certificate_named() -> None:
    client = AsyncClient("acme.localhost:3080")
    vouch(client, _document(), PIN)
    assert client.web_certificates is None


@pytest.mark.parametrize("bad", ["", "xyz", "AB" * 32, "ab" * 31, "sha256:" + "ab" * 32])
def test_a_named_certificate_is_a_lowercase_sha256_hex_digest(bad: str) -> None:
    with pytest.raises(ValidationError):
        _document(web_certificate_sha256=[bad])

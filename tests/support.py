"""Small helpers the network-facing test levels share."""

import gzip
import http.client
import socket
import threading
from collections.abc import Callable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

Fault = tuple[str, str, bytes]
"""An answer moto gives instead of its own: status line, content type, body."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1, free a moment ago (``free_port`` called
    twice can give the same port twice: each was free when it was asked)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for s in held:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (``VmRSS`` in /proc/PID/status); fails for a process
    that has none left (a zombie), so a dead client cannot pass for a small one."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}: it has exited")


def gzip_part(frame_bytes: bytes) -> bytes:
    """A recording part as a node sends one: a gzip member of frames."""
    return gzip.compress(frame_bytes, compresslevel=1, mtime=0)


class SwitchedMoto:
    """moto's apps (every service) served on loopback, as ``ThreadedMotoServer`` serves them,
    behind a switch: the server can go away and come back (moto's state lives in this process,
    so it survives), and ``fault`` decides per request whether AWS's own error answers
    instead (S3 503 SlowDown, DynamoDB throttling), as when a service sheds load."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.fault: Callable[[dict[str, Any]], Fault | None] | None = None
        self.faults = 0  # requests answered by ``fault``
        self._app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def _serve(self, environ: dict[str, Any], start_response: Any) -> Any:
        answer = self.fault(environ) if self.fault is not None else None
        if answer is None:
            return self._app(environ, start_response)
        self.faults += 1
        status, content_type, body = answer
        start_response(status, [("Content-Type", content_type)])
        return [body]

    def start(self) -> None:
        self._server = make_server(
            "127.0.0.1", self.port, self._serve, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def reset(self) -> None:
        """Forget every table, bucket and secret (moto keeps them per process)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/moto-api/reset")
            assert connection.getresponse().status == 200
        finally:
            connection.close()


def ca_issued_certificate(*names: str) -> tuple[str, str, str]:
    """PEM of a throwaway CA, of a web certificate for ``names`` (DNS) and 127.0.0.1 it
    issued, and of that certificate's key: a platform whose certificate a CA issued, as on
    AWS. Clients trust the CA through ``SSL_CERT_FILE``."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Test Web CA"))
        .issuer_name(name("Test Web CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name(names[0] if names else "localhost"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key = leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem).decode(), leaf.public_bytes(pem).decode(), key.decode()


async def open_ssh_server(process_factory: Callable[..., Any]) -> tuple[Any, int]:
    """A real asyncssh server on 127.0.0.1 that asks no authentication (a test about the
    session, not the login), running ``process_factory`` for each session in bytes: the
    server and its port."""
    import asyncssh

    class _Open(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False

    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=_Open,
        process_factory=process_factory, encoding=None,
    )  # fmt: skip
    return server, int(server.sockets[0].getsockname()[1])


class PassingObserver:
    """A session channel's observer (``session_channel.Observer``) that lets every byte
    through: for tests of what is under the node's watches, tested on their own."""

    def started(self) -> None: ...

    def output(self, data: bytes, datatype: int | None) -> bool:
        return True

    def input(self, data: bytes, datatype: int | None) -> bool:
        return True

    def resized(self, width: int, height: int) -> None: ...

    def closed(self) -> None: ...

"""The HTTPS client of the platform's API, shared by ``jump``, ``jumpctl`` and the node agent.

Requests are signed with the caller's certified key when it has one (``Credentials``).
``*.localhost`` names are dialled on 127.0.0.1 (RFC 6761) while the name itself still goes
out as TLS SNI and ``Host``, because the platform tells tenants apart by that name.

``insecure`` (a self-signed web certificate) turns TLS verification off. A node agent then
binds the client to the certificates its host CA's signed trust document names
(``web_certificates``, SHA-256 of the DER certificate): each connection checks the peer's
certificate right after the handshake, before ``http.client`` writes the request, so a
request (a join token above all) never reaches a server nobody vouched for.

Errors::

    ClientError             the request could not be made, or its answer was refused
    ├── APIError            the platform answered with a problem (status, type, detail)
    └── UnvouchedCertificate  the server's certificate is not one the client was bound to
"""

import hashlib
import http.client
import json
import secrets
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jumpgate.protocol import ports, signing
from jumpgate.protocol.names import resolve_loopback, split_host_port
from jumpgate.protocol.problems import ProblemType

TIMEOUT_SECONDS = 30


class ClientError(Exception):
    """The request failed; ``str()`` is one line saying what to do."""


class APIError(ClientError):
    """A problem+json answer from the platform."""

    def __init__(self, status: int, problem_type: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type


class UnvouchedCertificate(ClientError):
    """The server presented a web certificate outside the bound set; nothing was sent."""

    def __init__(self, host_header: str, digest: str) -> None:
        super().__init__(f"{host_header} presents web certificate sha256 {digest or '(none)'}")
        self.host_header = host_header
        self.digest = digest  # SHA-256 (hex) of the certificate it presented


def certificate_sha256(der: bytes) -> str:
    """How a web certificate is named: the SHA-256 of its DER bytes, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """A certificate and the key it certifies."""

    certificate: str
    key: signing.PrivateKey


class _Connection(http.client.HTTPSConnection):
    """HTTPS to ``host`` dialled at ``resolve_loopback(host)``, SNI still ``host``; when
    ``vouched`` is a set, only to a server whose certificate's digest is in it."""

    vouched: frozenset[str] | None = None
    host_header = ""

    def connect(self) -> None:
        address = (resolve_loopback(self.host), self.port)
        self.sock = socket.create_connection(address, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        if self.vouched is not None:
            # http.client writes the request only once connect() returns
            der = self.sock.getpeercert(binary_form=True)
            digest = certificate_sha256(der) if der else ""
            if digest not in self.vouched:
                self.sock.close()
                raise UnvouchedCertificate(self.host_header, digest)


class Client:
    """Calls ``/v1`` routes of one cluster; raises ``APIError`` with the server's detail."""

    def __init__(
        self,
        proxy: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        web_certificates: Iterable[str] | None = None,
    ) -> None:
        try:
            self.host, self.port = split_host_port(proxy, ports.WEB)
        except ValueError as exc:
            raise ClientError(str(exc)) from exc
        self.credentials = credentials
        self.insecure = insecure  # TLS verification is off (a self-signed web certificate)
        # When set, the only web certificates (``certificate_sha256``) requests may go to
        self.web_certificates = None if web_certificates is None else frozenset(web_certificates)
        context = ssl.create_default_context()
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._context = context

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"

    def call(self, method: str, path: str, body: Any = None, *, query: str = "") -> Any:
        """Send one request; the decoded JSON answer, or ``None`` for 204."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Host": self.host_header, "Accept": "application/json"}
        if data:
            headers["Content-Type"] = "application/json"
        if self.credentials:
            headers.update(self._signature(method, path, query, data))
        target = path + (f"?{query}" if query else "")
        connection = _Connection(
            self.host, self.port, timeout=TIMEOUT_SECONDS, context=self._context
        )
        connection.vouched = self.web_certificates
        connection.host_header = self.host_header
        try:
            connection.request(method, target, body=data or None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as exc:
            raise ClientError(
                f"cannot verify the HTTPS certificate of {self.host_header}: "
                "pass --insecure for a local self-signed platform"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(
                f"cannot reach {self.host_header} ({exc}): is jumpgate start running there?"
            ) from exc
        finally:
            connection.close()
        return _decode(response.status, raw)

    def _signature(self, method: str, path: str, query: str, body: bytes) -> dict[str, str]:
        assert self.credentials is not None
        request = signing.SignedRequest(
            method=method,
            host=self.host_header,
            path=path,
            query=query,
            timestamp=int(time.time()),
            nonce=secrets.token_urlsafe(18),
            body=body,
        )
        return signing.headers(self.credentials.key, self.credentials.certificate, request)


def _decode(status: int, raw: bytes) -> Any:
    if status == 204:
        return None
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = None
    if 200 <= status < 300:
        return payload
    if isinstance(payload, dict) and "detail" in payload:
        raise APIError(status, str(payload.get("type", "")), str(payload["detail"]))
    raise APIError(status, ProblemType.INTERNAL.value, f"the platform answered HTTP {status}")

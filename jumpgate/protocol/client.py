"""The HTTPS client of the platform's API, shared by ``jump``, ``jumpctl`` and the node agent.

A request is a ``calls.Call``: a route, its body model and the model its answer is read
into. ``AsyncClient.send`` (the node agent) and ``Client.send`` (the CLIs, which are sync
programs) send the same calls over httpx, each keeping its connections open between calls.

Requests are signed with the caller's certified key when it has one (``Credentials``).
``*.localhost`` names are dialled on 127.0.0.1 (RFC 6761) while the name itself still goes
out as TLS SNI and ``Host``, because the platform tells tenants apart by that name.

``insecure`` (a self-signed web certificate) turns TLS verification off. A node agent then
binds the client to the certificates its host CA's signed trust document names
(``web_certificates``, SHA-256 of the DER certificate): each connection checks the peer's
certificate inside the TLS handshake, before anything is written on it, so a request (a join
token above all) never reaches a server nobody vouched for. Binding drops the connections
opened before, which nobody checked.

Errors::

    ClientError             the request could not be made, or its answer was refused
    ├── APIError            the platform answered with a problem (status, type, detail)
    ├── InvalidAnswer       a success answer that is not the model the route promises
    └── UnvouchedCertificate  the server's certificate is not one the client was bound to
"""

from __future__ import annotations

import hashlib
import importlib
import json
import secrets
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import ValidationError

from jumpgate.protocol import invalid, ports, signing
from jumpgate.protocol.calls import Call
from jumpgate.protocol.names import resolve_loopback, split_host_port
from jumpgate.protocol.problems import ProblemType

if TYPE_CHECKING:
    import httpx

TIMEOUT_SECONDS = 30
KEEPALIVE_SECONDS = 30  # an idle connection is dropped after this; the next call dials again

T = TypeVar("T")


def _httpx() -> Any:
    """httpx, imported with the first client made: every CLI imports this module for its
    errors, and ``jump ssh``, which makes no API call, should not pay the 100-250 ms that
    importing httpx costs before the session starts."""
    return importlib.import_module("httpx")


def _unanswered() -> tuple[type[Exception], ...]:
    """What a request that got no answer raises (httpx's errors, the resolver's, sockets')."""
    httpx = _httpx()
    return (httpx.HTTPError, httpx.InvalidURL, OSError, UnicodeError)


class ClientError(Exception):
    """The request failed; ``str()`` is one line saying what to do."""


class APIError(ClientError):
    """A problem+json answer from the platform."""

    def __init__(self, status: int, problem_type: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type


class InvalidAnswer(ClientError):
    """A success answer that does not decode into the route's model; ``payload`` is what came
    (the decoded JSON, or ``None``), for a caller that has its own word for it."""

    def __init__(self, message: str, payload: object) -> None:
        super().__init__(message)
        self.payload = payload


class UnvouchedCertificate(ClientError):
    """The server presented a web certificate outside the bound set; nothing was sent."""

    def __init__(self, host_header: str, digest: str) -> None:
        super().__init__(f"{host_header} presents web certificate sha256 {digest or '(none)'}")
        self.host_header = host_header
        self.digest = digest  # SHA-256 (hex) of the certificate it presented


def certificate_sha256(der: bytes) -> str:
    """How a web certificate is named: the SHA-256 of its DER bytes, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def invalid_detail(error: ValidationError) -> str:
    """One line for a request body the models refuse, worded as the platform words it
    (``protocol.invalid``)."""
    return invalid.first_line(error)


@dataclass(frozen=True)
class Credentials:
    """A certificate and the key it certifies."""

    certificate: str
    key: signing.PrivateKey


class _Binding:
    """The web certificates a client's connections may present (``None``: any)."""

    def __init__(self, host_header: str, vouched: frozenset[str] | None) -> None:
        self.host_header = host_header
        self.vouched = vouched

    def check(self, der: bytes | None) -> None:
        if self.vouched is None:
            return
        digest = certificate_sha256(der) if der else ""
        if digest not in self.vouched:
            raise UnvouchedCertificate(self.host_header, digest)


def _tls_context(insecure: bool, binding: _Binding) -> ssl.SSLContext:
    """A context whose handshakes end with ``binding``'s check: the sync transport wraps
    sockets (``sslsocket_class``), the async one memory BIOs (``sslobject_class``); both
    close the connection when the handshake raises, so nothing is written on it."""

    class CheckedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            try:
                binding.check(self.getpeercert(binary_form=True))
            except UnvouchedCertificate:
                self.close()  # ssl closes it on OSError only: the socket holds the descriptor
                raise

    class CheckedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            binding.check(self.getpeercert(binary_form=True))

    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = CheckedSocket
    context.sslobject_class = CheckedObject
    return context


class _Base:
    """What both clients share: the address, signing, TLS, and reading answers."""

    def __init__(
        self,
        proxy: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        web_certificates: Iterable[str] | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        try:
            self.host, self.port = split_host_port(proxy, ports.WEB)
        except ValueError as exc:
            raise ClientError(str(exc)) from exc
        self.credentials = credentials
        self.insecure = insecure  # TLS verification is off (a self-signed web certificate)
        self.timeout = timeout
        vouched = None if web_certificates is None else frozenset(web_certificates)
        self._binding = _Binding(self.host_header, vouched)
        # The address dialled; the name goes as SNI and Host (``_request``)
        dialled = resolve_loopback(self.host)
        dialled = f"[{dialled}]" if ":" in dialled else dialled  # an IPv6 literal
        self._origin = f"https://{dialled}:{self.port}"

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def web_certificates(self) -> frozenset[str] | None:
        """When set, the only web certificates (``certificate_sha256``) requests may go to."""
        return self._binding.vouched

    @web_certificates.setter
    def web_certificates(self, digests: Iterable[str] | None) -> None:
        self._binding = _Binding(self.host_header, None if digests is None else frozenset(digests))
        self._rebind()

    def _rebind(self) -> None:
        raise NotImplementedError

    def _options(self) -> dict[str, Any]:
        httpx = _httpx()
        return {
            "verify": _tls_context(self.insecure, self._binding),
            "timeout": httpx.Timeout(self.timeout),
            "limits": httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
            "trust_env": False,  # no proxy from the environment: the platform is dialled direct
        }

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        data = b"" if call.body is None else call.body.model_dump_json(exclude_unset=True).encode()
        headers = {"Host": self.host_header, "Accept": "application/json"}
        if data:
            headers["Content-Type"] = "application/json"
        request = http.build_request(
            call.route.method,
            self._origin + call.target,
            content=data or None,
            headers=headers,
            extensions={"sni_hostname": self.host},
        )
        if self.credentials:
            # Signed as it goes on the wire, percent-encoding and all
            path, _, query = request.url.raw_path.decode("ascii").partition("?")
            request.headers.update(self._signature(call.route.method, path, query, data))
        return request

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

    def _failure(self, exc: Exception) -> ClientError:
        """The one line for a request that got no answer; a certificate that failed
        verification is its ``__cause__`` (a mistake to fix, not a platform to wait for)."""
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return _caused(
                    f"cannot verify the HTTPS certificate of {self.host_header}: "
                    "pass --insecure for a local self-signed platform",
                    cause,
                )
            if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
                return _caused(
                    f"{self.host_header} does not speak HTTPS (an SSH port?): give the "
                    "cluster's web address, e.g. acme.example.sh:3080",
                    cause,
                )
            cause = cause.__cause__ or cause.__context__
        reason = str(exc) or type(exc).__name__
        return _caused(
            f"cannot reach {self.host_header} ({reason}): is jumpgate start running there?", exc
        )

    def _decode(self, call: Call[T], status: int, raw: bytes) -> T:
        payload: object = None
        if status != 204 and raw:
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
        if not 200 <= status < 300:
            if isinstance(payload, dict) and "detail" in payload:
                raise APIError(status, str(payload.get("type", "")), str(payload["detail"]))
            raise APIError(
                status, ProblemType.INTERNAL.value, f"the platform answered HTTP {status}"
            )
        try:
            return call.decode(payload)
        except ValidationError as exc:
            raise InvalidAnswer(
                f"{self.host_header} answered {call.route.method} {call.route.path} with "
                f"something that is not {call.answer_name} ({invalid_detail(exc)}): is it a "
                "Jumpgate platform of this version?",
                payload,
            ) from exc


class Client(_Base):
    """Sends calls and waits for their answers, reusing connections: for the CLIs."""

    def __init__(
        self,
        proxy: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        web_certificates: Iterable[str] | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(
            proxy,
            insecure=insecure,
            credentials=credentials,
            web_certificates=web_certificates,
            timeout=timeout,
        )
        self._http: httpx.Client = _httpx().Client(**self._options())

    def _rebind(self) -> None:
        self._http.close()
        self._http = _httpx().Client(**self._options())

    def send(self, call: Call[T]) -> T:
        """Send ``call``; its answer, decoded into its model."""
        try:
            response = self._http.send(self._request(self._http, call))
        except UnvouchedCertificate:
            raise  # from inside the handshake, as it is: nothing was sent
        except _unanswered() as exc:
            raise self._failure(exc)  # noqa: B904 (its cause is set: the root of it)
        return self._decode(call, response.status_code, response.content)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """Sends calls on the running event loop, reusing connections: for the node agent."""

    def __init__(
        self,
        proxy: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        web_certificates: Iterable[str] | None = None,
        timeout: float = TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(
            proxy,
            insecure=insecure,
            credentials=credentials,
            web_certificates=web_certificates,
            timeout=timeout,
        )
        self._retired: list[httpx.AsyncClient] = []
        self._http: httpx.AsyncClient = _httpx().AsyncClient(**self._options())

    def _rebind(self) -> None:
        # Closing is a coroutine: the old pool is closed with the client (``aclose``)
        self._retired.append(self._http)
        self._http = _httpx().AsyncClient(**self._options())

    async def send(self, call: Call[T]) -> T:
        """Send ``call``; its answer, decoded into its model."""
        while self._retired:
            await self._retired.pop().aclose()
        try:
            response = await self._http.send(self._request(self._http, call))
        except UnvouchedCertificate:
            raise  # from inside the handshake, as it is: nothing was sent
        except _unanswered() as exc:
            raise self._failure(exc)  # noqa: B904 (its cause is set: the root of it)
        return self._decode(call, response.status_code, response.content)

    async def aclose(self) -> None:
        while self._retired:
            await self._retired.pop().aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _caused(message: str, cause: BaseException) -> ClientError:
    """A ``ClientError`` saying ``message``, with ``cause`` as its ``__cause__``."""
    failure = ClientError(message)
    failure.__cause__ = cause
    return failure

"""The proxy's HTTPS front: every request becomes an API Gateway v2 event for the control plane.

The front enforces the body limit before reading further, so an oversized upload costs the
proxy at most the limit, answers a call to an authenticated route that carries no request
signature 401 itself, and answers problem+json for anything it refuses itself.
"""

import asyncio
import json
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web

from jumpgate.edge_proxy.connections import ConnectionLimits
from jumpgate.edge_proxy.events import Invoke, decode_response, http_event
from jumpgate.edge_proxy.https_bounds import BoundedHTTPS, BoundedSite, http_logger
from jumpgate.edge_proxy.limits import (
    ANONYMOUS_PATHS,
    LOGIN_PATH,
    LoginGuard,
    Refusal,
    unsigned,
)
from jumpgate.edge_proxy.tenant_share import TenantBusy
from jumpgate.protocol.problems import CONTENT_TYPE, MAX_BODY_BYTES, ProblemType

logger = logging.getLogger(__name__)


LINGER_SECONDS = 2.0
"""How long the rest of a refused body is read (so its client sees the answer, not a reset)
before the connection closes: aiohttp's 10 s would let a trickler stay that much longer."""

PUBLIC_PREFIXES = ("/v1/", "/webapi/")
"""What the HTTPS front forwards to the control plane; anything else is 404 here."""


def _problem(status: int, type_: ProblemType, title: str, detail: str) -> web.Response:
    body = {"type": type_.value, "title": title, "status": status, "detail": detail}
    return web.Response(status=status, text=json.dumps(body), content_type=CONTENT_TYPE)


class WebFront:
    """Serves HTTPS and hands each request to ``invoke``."""

    def __init__(
        self,
        invoke: Invoke,
        *,
        limits: ConnectionLimits | None = None,
        refused: Counter[str] | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self._invoke = invoke
        self._guard = guard  # login rate limits, none when not given
        self._runner: web.AppRunner | None = None
        self._limits = limits or ConnectionLimits()
        self._refused: Counter[str] = refused if refused is not None else Counter()
        self._https: BoundedHTTPS | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.rel_url.raw_path.startswith(PUBLIC_PREFIXES):
            # The control plane's internal routes are the proxy's to call, never the world's:
            # on AWS the path picks the function, so this is what keeps them off the front.
            return _problem(404, ProblemType.NOT_FOUND, "Not found", "no such route: see /v1/")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _too_large(request.content_length)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(None)
        not_signed = unsigned(request.rel_url.raw_path, request.headers)
        if not_signed is not None:
            # Only a signed call can pass the control plane on this route: an unsigned one is
            # answered here, before it takes a place in its tenant's lane (decision 0018).
            return _problem(401, ProblemType.UNAUTHENTICATED, "Unauthenticated", not_signed)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        source_ip = peer[0] if peer else ""
        admitted = None
        path = request.rel_url.raw_path
        if self._guard is not None and request.method == "POST" and path == LOGIN_PATH:
            verdict = self._guard.admit(source_ip, request.headers.get("Host", ""), body)
            if isinstance(verdict, Refusal):
                return _limited(verdict)
            admitted = verdict
        elif self._guard is not None and path in ANONYMOUS_PATHS:
            refused = self._guard.admit_anonymous(source_ip)
            if refused is not None:
                return _limited(refused)
        event = http_event(
            method=request.method,
            path=request.rel_url.raw_path,  # as sent (percent-encoded): signatures cover it
            query=request.rel_url.raw_query_string,  # as sent: signatures cover it
            headers=dict(request.headers),
            body=body,
            source_ip=source_ip,
        )
        try:
            answer = decode_response(await self._invoke(event))
            if admitted is not None and self._guard is not None:
                self._guard.settle(admitted, answer.status)
        except TenantBusy as busy:  # the tenant's lane is full: refused at once, not queued
            return _limited(busy.refusal)
        except Exception:
            logger.exception("control plane call failed")
            return _problem(
                502,
                ProblemType.INTERNAL,
                "Bad gateway",
                "the control plane did not answer: try again shortly",
            )
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def start(self, host: str, port: int, context: ssl.SSLContext) -> int:
        """Listen on ``host:port`` (0 picks a free port); return the bound port.

        Connections are capped per source and held to the handshake, header, body and idle
        deadlines of ``ConnectionLimits`` (aiohttp alone has no header or body deadline).
        """
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._bounded])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._limits.idle_timeout,
            lingering_time=LINGER_SECONDS,
            logger=http_logger(),  # a malformed request is one info line, not a traceback
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self._https = BoundedHTTPS(self._runner.server, context, self._limits, self._refused)
        site = BoundedSite(self._runner, host, port, self._https, backlog=512)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    @web.middleware
    async def _bounded(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The head is in: stop its deadline; then the body must arrive within its own."""
        if self._https is not None:
            self._https.request_started(request.transport)
        size = request.content_length
        if request.body_exists and (size is None or size <= MAX_BODY_BYTES):
            try:
                await asyncio.wait_for(request.read(), self._limits.body_timeout)
            except TimeoutError:
                late = _problem(
                    408,
                    ProblemType.INVALID_REQUEST,
                    "Request timeout",
                    f"the body did not arrive within {self._limits.body_timeout:g}s",
                )
                late.force_close()  # the rest of the body must not be read as a request
                return late
            except web.HTTPRequestEntityTooLarge:
                return _too_large(None)
        return await handler(request)

    async def stop(self) -> None:
        """Stop accepting and finish in-flight requests."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _limited(refusal: Refusal) -> web.Response:
    answer = _problem(429, ProblemType.RATE_LIMITED, "Too many requests", refusal.detail)
    answer.headers["Retry-After"] = str(refusal.retry_after)
    return answer


def _too_large(size: int | None) -> web.Response:
    said = f"{size} bytes" if size is not None else "too large"
    return _problem(
        413,
        ProblemType.BODY_TOO_LARGE,
        "Body too large",
        f"request body is {said}; the limit is {MAX_BODY_BYTES}",
    )

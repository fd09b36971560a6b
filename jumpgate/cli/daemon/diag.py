"""Diagnostics on ``--diag-addr``: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

A few lines of HTTP/1.0 over asyncio streams rather than a web framework, so a node that
runs only the agent needs nothing more installed. Bind it to loopback or a private address.
"""

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from jumpgate.protocol.metrics import MetricLine

_MAX_REQUEST = 8192


def render(metrics: Iterable[MetricLine]) -> str:
    """Prometheus text exposition format."""
    lines: list[str] = []
    typed: set[str] = set()
    for name, kind, labels, value in metrics:
        if name not in typed:
            lines.append(f"# TYPE {name} {kind}")
            typed.add(name)
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


class DiagServer:
    """Serves health, readiness and metrics from callables the daemon supplies."""

    def __init__(
        self, ready: Callable[[], bool], metrics: Callable[[], Iterable[MetricLine]]
    ) -> None:
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, path = _request_line(head)
            status, body, kind = self._answer(method, path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, body, kind = "400 Bad Request", "bad request\n", "text/plain"
        payload = body.encode()
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _answer(self, method: str, path: str) -> tuple[str, str, str]:
        if method != "GET":
            return "405 Method Not Allowed", "only GET\n", "text/plain"
        if path == "/healthz":
            return "200 OK", "ok\n", "text/plain"
        if path == "/readyz":
            if self._ready():
                return "200 OK", "ready\n", "text/plain"
            return "503 Service Unavailable", "not ready\n", "text/plain"
        if path == "/metrics":
            return "200 OK", render(self._metrics()), "text/plain; version=0.0.4"
        return "404 Not Found", "try /healthz, /readyz or /metrics\n", "text/plain"


def _request_line(head: bytes) -> tuple[str, str]:
    if len(head) > _MAX_REQUEST:
        raise ValueError("request too large")
    method, path, _ = head.split(b"\r\n", 1)[0].decode("ascii").split(" ", 2)
    return method, path.split("?", 1)[0]

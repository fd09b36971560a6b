"""API Gateway HTTP API (payload v2) events, as the proxy hands requests to the control plane.

Building the very shape Lambda receives keeps the embedded and AWS paths one code path.
"""

import base64
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]
Invoke = Callable[[Event], Awaitable[Event]]
"""A control-plane transport: an in-process handler call or a Lambda invoke."""


def _parameters(query: str) -> dict[str, str]:
    """What API Gateway (HTTP API) makes of a query string: repeated keys joined by commas."""
    joined: dict[str, list[str]] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        joined.setdefault(key, []).append(value)
    return {key: ",".join(values) for key, values in joined.items()}


def http_event(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    source_ip: str,
) -> Event:
    """The event API Gateway would deliver for this request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        text, is_b64 = body.decode(), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        **({"queryStringParameters": _parameters(query)} if query else {}),
        "headers": lowered,
        "requestContext": {
            "accountId": "local",
            "apiId": "jumpgate",
            "domainName": lowered.get("host", "").rsplit(":", 1)[0],
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


@dataclass(frozen=True)
class HttpResponse:
    """A handler's answer, decoded."""

    status: int
    headers: dict[str, str]
    body: bytes


def decode_response(response: Event) -> HttpResponse:
    """Read a Lambda proxy response (``statusCode``, ``headers``, ``body``, base64 flag)."""
    body = response.get("body") or ""
    raw = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(v) for v in values)
    return HttpResponse(int(response.get("statusCode", 502)), headers, raw)

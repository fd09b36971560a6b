"""The proxy's end of a node's recording channel (``ports.RECORDINGS`` inside its tunnel).

The node says what it sends (``node_agent.uploads`` has the conversation); the proxy stamps
each request with the tunnel's tenant and node, which the node cannot choose, and hands it to
the control plane. Every answer is one JSON line: the result, or ``{"error": ...}`` with the
reason (the node keeps its spool and tries again later).
"""

import json
import logging
import time
from typing import Any

import asyncssh
from pydantic import ValidationError

from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.protocol import models
from jumpgate.protocol.recording import (
    MAX_PART_BYTES,
    PartInfo,
    RecordingMeta,
    SessionEnd,
    check_session_id,
)
from jumpgate.protocol.tunnel import MAX_LINE_BYTES

logger = logging.getLogger(__name__)


SETTINGS_CACHE_SECONDS = 10.0


class _Refused(Exception):
    pass


class SettingsCache:
    """Tenants' recording settings, asked of the control plane at most once per
    ``SETTINGS_CACHE_SECONDS`` per tenant, however many of its nodes ask this proxy."""

    def __init__(self, control: ControlPlaneClient) -> None:
        self._control = control
        self._known: dict[str, tuple[float, models.RecordingSettings]] = {}

    async def get(self, tenant: str) -> models.RecordingSettings:
        now = time.monotonic()
        known = self._known.get(tenant)
        if known is not None and now - known[0] < SETTINGS_CACHE_SECONDS:
            return known[1]
        settings = await self._control.recording_settings(tenant)
        self._known[tenant] = (now, settings)
        return settings


async def serve(
    control: ControlPlaneClient,
    settings: SettingsCache,
    node: models.TunnelNode,
    reader: asyncssh.SSHReader[bytes],
    writer: asyncssh.SSHWriter[bytes],
) -> None:
    """Answer one recording channel until the node closes it."""
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
                raise _Refused("request line too long or cut short")
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                answer = await _answer(control, settings, node, request, reader)
            except RecursionError:  # deep nesting: bad JSON, not a ValueError
                answer = {"error": "a request line is nested too deeply"}
            except (ControlPlaneError, ValidationError, ValueError, KeyError, TypeError) as exc:
                answer = {"error": _reason(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
    except _Refused as exc:
        logger.info("recording channel closed", extra={"node": node.host_id, "reason": str(exc)})
        writer.write(json.dumps({"error": str(exc)}).encode() + b"\n")
    except (asyncssh.Error, OSError, ConnectionError) as exc:
        logger.info("recording channel lost", extra={"node": node.host_id, "reason": str(exc)})
    finally:
        writer.close()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"bad request: {exc.errors()[0].get('msg', 'invalid')}"[:300]
    return str(exc)[:300]


async def _answer(
    control: ControlPlaneClient,
    cache: SettingsCache,
    node: models.TunnelNode,
    request: dict[str, Any],
    reader: asyncssh.SSHReader[bytes],
) -> dict[str, Any]:
    op = request.get("op")
    if op == "hello":
        settings = await cache.get(node.tenant)
        return {"mode": settings.mode.value, "record_exec": settings.record_exec}
    session_id = check_session_id(str(request.get("session_id", "")))
    if op == "status":
        meta = RecordingMeta.model_validate(
            {**request["meta"], "server_id": node.host_id, "nodename": node.nodename}
        )
        if meta.session_id != session_id:
            raise ValueError("the metadata is of another session")
        return {"parts": await control.recording_open(node.tenant, meta)}
    if op == "part":
        try:
            info = PartInfo.model_validate(
                {k: request.get(k) for k in ("index", "size", "sha256", "chain")}
            )
        except ValidationError as exc:  # its bytes follow: the channel cannot go on
            raise _Refused(_reason(exc)) from exc
        if info.size > MAX_PART_BYTES:
            raise _Refused(f"a part is at most {MAX_PART_BYTES} bytes")
        data = await reader.readexactly(info.size)
        await control.recording_part(
            node.tenant, session_id, node.host_id, str(request.get("previous", "")), info, data
        )
        return {"stored": info.index}
    if op == "complete":
        end = SessionEnd.model_validate(request["end"])
        parts = int(request["parts"])
        await control.recording_complete(node.tenant, session_id, node.host_id, parts, end)
        return {"complete": True}
    if op == "alive":
        await control.recording_alive(node.tenant, session_id, node.host_id)
        return {"alive": True}
    raise ValueError(f"unknown request {op!r}")

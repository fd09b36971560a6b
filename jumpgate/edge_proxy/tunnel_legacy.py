"""Protocol 0: the tunnel subsystems agents spoke before the control channel (decision 0021).

An agent of an earlier release opens a short-lived session channel per exchange: heartbeat
JSON lines on ``jumpgate-heartbeat``, audit event lines on ``jumpgate-audit`` (exit status 75
meaning "try again"), and ``jumpgate-renew`` answered by a certificate on stdout. A proxy
upgraded before its nodes keeps serving them, with the same budgets and the same code as the
control channel (``tunnel_requests``, ``audit_intake``); they carry no hello and no trust
push. To be removed once no supported agent speaks them.
"""

import json
import logging
from typing import Any

import asyncssh

from jumpgate.edge_proxy import audit_intake
from jumpgate.edge_proxy.tunnel_requests import NodeRequests, OverPace, TunnelSide
from jumpgate.protocol.tunnel import MAX_LINE_BYTES
from jumpgate.protocol.tunnel_messages import Ack, Heartbeat, Message, Renewed, RenewRequest, encode

logger = logging.getLogger(__name__)
HEARTBEAT_SUBSYSTEM = "jumpgate-heartbeat"
RENEW_SUBSYSTEM = "jumpgate-renew"
AUDIT_SUBSYSTEM = "jumpgate-audit"
SUBSYSTEMS = frozenset({HEARTBEAT_SUBSYSTEM, RENEW_SUBSYSTEM, AUDIT_SUBSYSTEM})
TEMPFAIL = 75
"""The exit status of "not now: send it again later" (EX_TEMPFAIL)."""
MAX_AUDIT_BATCH = 100


async def serve(side: TunnelSide, process: asyncssh.SSHServerProcess[str]) -> int:
    """Serve one legacy subsystem channel; its exit status."""
    node = side.node
    if node is None:
        return 1

    def send(message: Message) -> None:
        process.stdout.write(encode(message).decode())

    channel = NodeRequests(side, send)
    if process.subsystem == RENEW_SUBSYSTEM:
        answer = await channel.renew(RenewRequest(id=0))
        if isinstance(answer, Renewed):
            process.stdout.write(answer.certificate + "\n")
            return 0
        process.stderr.write(answer.reason + "\n")
        return 1
    if process.subsystem == AUDIT_SUBSYSTEM:
        return await _audit(side, process)
    try:
        async for beat in _beats(side, process):
            await channel.heartbeat(node, beat)
    except OverPace:
        limits = side.host.nodes.limits
        process.stderr.write(
            f"heartbeat: more than {limits.heartbeat_burst} lines at once or "
            f"{limits.heartbeats_per_second:g} a second: send one when something changes\n"
        )
        return TEMPFAIL
    except ValueError:
        pass  # a bad line ends the channel, as it did
    return 0


async def _beats(side: TunnelSide, process: asyncssh.SSHServerProcess[str]) -> Any:
    """The heartbeats on ``process``, paced and bounded as the control channel's are."""
    async for line in process.stdin:
        if not line.strip():
            continue
        if side.budget.beat_wait():
            raise OverPace("more heartbeat lines than a node sends")
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"a line is longer than {MAX_LINE_BYTES} bytes")
        try:
            beat = json.loads(line)
        except RecursionError:
            raise ValueError("a line is nested too deeply") from None
        if not isinstance(beat, dict):
            raise ValueError("each line must be a JSON object")
        try:
            labels = dict(beat.get("labels", {}))
            heartbeat = Heartbeat(
                hostname=str(beat.get("hostname", ""))[:253],
                addr=str(beat.get("addr", ""))[:64],
                version=str(beat.get("version", ""))[:64],
                labels={str(k)[:63]: str(v)[:255] for k, v in list(labels.items())[:256]},
            )
        except (ValueError, TypeError):  # ``dict(5)`` is a TypeError: it would end the tunnel
            logger.info("bad heartbeat ignored", extra={"node": getattr(side.node, "host_id", "")})
            continue
        yield heartbeat


async def _audit(side: TunnelSide, process: asyncssh.SSHServerProcess[str]) -> int:
    node = side.node
    assert node is not None
    intake = side.intake
    if intake.exhausted():
        process.stderr.write("audit: this node is over its audit budget: try again later\n")
        return TEMPFAIL
    lines: list[str] = []
    size = 0
    try:
        async for line in process.stdin:
            if not line.strip():
                continue
            if len(lines) >= MAX_AUDIT_BATCH:
                process.stderr.write(f"audit events refused: more than {MAX_AUDIT_BATCH}\n")
                return 1
            lines.append(line)
            size += len(line)
            if intake.too_big(size):
                break  # answered "try again" without reading the rest
    except ValueError as exc:  # not UTF-8
        process.stderr.write(f"audit events refused: {str(exc)[:200]}\n")
        return 1
    answer = await audit_intake.take(side.host.control, node, intake, 0, lines)
    if isinstance(answer, Ack):
        return 0
    process.stderr.write(answer.reason + "\n")
    return TEMPFAIL

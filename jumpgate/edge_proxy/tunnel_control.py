"""The proxy's end of a tunnel's control channel (``protocol.tunnel_messages``).

One session channel per tunnel connection carries everything a node says to the platform
besides sessions and recordings: the versioned hello, heartbeats (presence is written only
when it changes, at most once per ``presence_every``), audit batches (within the node's
budget, ``audit_intake``), certificate renewals (a few at once, then one a minute), and the
trust document the proxy pushes at hello and whenever it changes. Requests are served
concurrently under one ``TaskGroup`` and answered by id; every limit is the one the separate
subsystems had (``node_budget``, decision 0019).
"""

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

import asyncssh

from jumpgate.edge_proxy import audit_intake
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.node_budget import NodeBudget, NodeBudgets
from jumpgate.edge_proxy.registry import Tunnel, TunnelRegistry
from jumpgate.protocol import models
from jumpgate.protocol.channel_window import bound_receive_window
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel_messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSIONS,
    Ack,
    AuditBatch,
    Heartbeat,
    Hello,
    MessageError,
    Refusal,
    Renewed,
    RenewRequest,
    Tempfail,
    TrustUpdate,
    Welcome,
    choose_version,
    decode,
    encode,
    mismatch,
)
from jumpgate.protocol.version import server_version

logger = logging.getLogger(__name__)

HELLO_SECONDS = 10.0
"""How long the proxy waits for the hello before ending the channel."""
TRUST_POLL_SECONDS = 300.0
"""How often the proxy asks the control plane whether a tunnel's trust document changed."""
MAX_IN_FLIGHT = 8
"""Requests of one control channel served at once; more are answered "try again"."""
PROXY_CAPABILITIES = ("trust-push",)


class Control(Protocol):
    """What the channel needs of the proxy (``TunnelHost``)."""

    control: ControlPlaneClient
    proxy_id: str
    registry: TunnelRegistry
    nodes: NodeBudgets

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None: ...


class TunnelSide(Protocol):
    """What the channel needs of its tunnel connection (``tunnel_front.TunnelServer``)."""

    node: models.TunnelNode | None
    tunnel: Tunnel | None

    @property
    def host(self) -> Control: ...

    @property
    def budget(self) -> NodeBudget: ...

    @property
    def intake(self) -> audit_intake.TunnelAudit: ...


class OverPace(ValueError):
    """A node sent lines faster than its budget: the channel is ended, saying so (pausing
    the reader instead still let the node keep the proxy busy: asyncssh keeps receiving)."""


async def lines(stdin: asyncssh.SSHReader[str]) -> AsyncIterator[str]:
    """The lines on ``stdin``, each at most ``MAX_MESSAGE_BYTES``; ``MessageError`` for a
    longer one (read no further: nothing after it can be trusted to start a line)."""
    buffer = ""
    while True:
        chunk = await stdin.read(64 * 1024)
        if not chunk:
            if buffer.strip():
                yield buffer
            return
        # One split per chunk: splitting a line at a time copied the rest of the buffer each
        # time, and a node sending blank lines (not paced) kept the proxy busy doing it
        *complete, buffer = (buffer + chunk).split("\n")
        for line in complete:
            if line.strip():
                yield line
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise MessageError(f"a message is longer than {MAX_MESSAGE_BYTES} bytes")


def _request_id(line: str) -> int | None:
    """The ``id`` of a line that did not decode, if it has one: its refusal names it, so a
    node waiting for that answer gets it."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, int) and 0 <= found < 2**53 else None


class ControlChannel:
    """One tunnel's control channel, from its hello until the node closes it."""

    def __init__(self, side: TunnelSide, process: asyncssh.SSHServerProcess[str]) -> None:
        self._side = side
        self._host = side.host
        self._process = process
        self._in_flight = 0
        self._audit_refused = False  # the last audit batch answered was told to wait

    def _send(self, message: Any) -> None:
        self._process.stdout.write(encode(message).decode())

    async def serve(self) -> int:
        """Serve the channel; its exit status (0 when the node closed it)."""
        node = self._side.node
        if node is None:
            return 1
        # Requests wait for budgets: without this asyncssh would let the node send another
        # window at each resume, to be decrypted and buffered (decision 0019).
        bound_receive_window(self._process.channel)
        reading = lines(self._process.stdin)
        try:
            hello = await asyncio.wait_for(self._hello(node, reading), HELLO_SECONDS)
        except (MessageError, TimeoutError) as exc:
            self._send(Refusal(reason=f"the first message must be a hello: {exc}"[:300]))
            return 1
        if hello is None:
            return 1
        pusher = None
        if hello.nonce:
            pusher = asyncio.create_task(self._push_trust(node, hello.nonce))
        try:
            return await self._requests(node, reading)
        finally:
            if pusher is not None:
                pusher.cancel()

    async def _hello(self, node: models.TunnelNode, reading: AsyncIterator[str]) -> Hello | None:
        first = await anext(reading, "")
        message = decode(first)
        if not isinstance(message, Hello):
            raise MessageError(f"got {message.type!r}")
        version = choose_version(PROTOCOL_VERSIONS, message.versions)
        if version is None:
            reason = mismatch(PROTOCOL_VERSIONS, message.versions)
            logger.warning(
                "tunnel hello refused",
                extra={"node": node.host_id, "tenant": node.tenant, "reason": reason},
            )
            self._send(Refusal(reason=reason))
            return None
        self._send(
            Welcome(
                version=version,
                proxy_version=server_version()[:64],
                capabilities=list(PROXY_CAPABILITIES),
            )
        )
        return message

    async def _requests(self, node: models.TunnelNode, reading: AsyncIterator[str]) -> int:
        budget = self._side.budget
        async with asyncio.TaskGroup() as requests:
            try:
                async for line in reading:
                    try:
                        message = decode(line)
                    except MessageError as exc:
                        self._pace(budget)
                        logger.info(
                            "bad control message", extra={"node": node.host_id, "reason": str(exc)}
                        )
                        self._send(Refusal(id=_request_id(line), reason=str(exc)))
                        continue
                    if isinstance(message, AuditBatch | RenewRequest):
                        if self._answered_at_once(message):
                            # Answered without work (a renewal, "try again"): paced as a
                            # heartbeat line is, or a node could send them without end
                            self._pace(budget)
                        if self._in_flight >= MAX_IN_FLIGHT:
                            self._send(Tempfail(id=message.id, reason=_BUSY))
                            continue
                        self._in_flight += 1
                        requests.create_task(self._answer(message))
                    elif isinstance(message, Heartbeat):
                        self._pace(budget)
                        await self.heartbeat(node, message)
                    else:
                        self._pace(budget)
                        self._send(Refusal(reason=f"a node does not send {message.type!r}"))
            except OverPace:
                limits = self._host.nodes.limits
                self._send(
                    Tempfail(
                        reason=f"more than {limits.heartbeat_burst} heartbeats at once or "
                        f"{limits.heartbeats_per_second:g} a second: send one when something "
                        "changes"
                    )
                )
                return 1
            except (MessageError, UnicodeDecodeError) as exc:
                self._send(Refusal(reason=str(exc)[:300]))
                return 1
        return 0

    def _answered_at_once(self, request: AuditBatch | RenewRequest) -> bool:
        """Whether ``request`` is one a node sends rarely or after being told to wait: a
        renewal (one every few hours), a request over the in-flight cap, or an audit batch
        while the last one was answered "try again"."""
        return (
            isinstance(request, RenewRequest)
            or self._in_flight >= MAX_IN_FLIGHT
            or self._audit_refused
        )

    def _pace(self, budget: NodeBudget) -> None:
        if budget.beat_wait():
            raise OverPace("more heartbeat lines than a node sends")

    async def _answer(self, request: AuditBatch | RenewRequest) -> None:
        try:
            if isinstance(request, AuditBatch):
                answer = await self._audit(request)
                self._audit_refused = isinstance(answer, Tempfail)
                self._send(answer)
            else:
                self._send(await self.renew(request))
        finally:
            self._in_flight -= 1

    async def heartbeat(self, node: models.TunnelNode, beat: Heartbeat) -> None:
        """Report ``beat`` as the node's presence when it changes, in its turn."""
        tunnel = self._side.tunnel
        if tunnel is None:
            self._send(Refusal(reason="a heartbeat before the tunnel: listen on the SSH port"))
            return
        try:
            presence = models.Presence(
                tenant=node.tenant,
                host_id=node.host_id,
                proxy=self._host.proxy_id,
                hostname=beat.hostname,
                addr=beat.addr,
                version=beat.version,
                labels=dict(beat.labels),
            )
        except ValueError as exc:  # what the store would not take
            logger.info("bad heartbeat ignored", extra={"node": node.host_id})
            self._send(Refusal(reason=f"heartbeat ignored: {str(exc).splitlines()[0]}"[:300]))
            return
        try:
            await self._report(tunnel, self._side.budget, presence)
        except ControlPlaneError as exc:
            logger.warning(
                "presence not recorded", extra={"node": node.host_id, "reason": str(exc)}
            )

    async def _report(self, tunnel: Tunnel, budget: NodeBudget, presence: models.Presence) -> None:
        """Write ``presence`` now if its turn has come, else leave it to a flush (one per node)."""
        wait = budget.presence_wait(presence)
        if wait is None:
            return
        if not wait:
            await self._write(budget, presence)
        elif not budget.flushing:
            budget.flushing = True
            self._host.spawn(self._flush(tunnel, budget, wait), name="presence-flush")

    async def _write(self, budget: NodeBudget, presence: models.Presence) -> None:
        """The turn is taken before the call, so no other write overtakes this one."""
        budget.wrote(presence)
        try:
            await self._host.control.presence(presence)
        except ControlPlaneError:
            budget.gone()  # not written: the next heartbeat writes it again
            raise

    async def _flush(self, tunnel: Tunnel, budget: NodeBudget, wait: float) -> None:
        """Write the change that waited for its turn, unless the tunnel went down meanwhile."""
        due: float | None = wait
        try:
            while due is not None:
                await asyncio.sleep(due)
                pending = budget.pending
                if (
                    pending is None
                    or self._host.registry.get(tunnel.tenant, tunnel.host_id) is not tunnel
                ):
                    return
                due = budget.presence_wait(pending)
                if due == 0:
                    await self._write(budget, pending)
                    due = None if budget.pending is None else budget.presence_wait(budget.pending)
        except ControlPlaneError as exc:
            logger.warning(
                "presence not recorded", extra={"node": tunnel.host_id, "reason": str(exc)}
            )
        finally:
            budget.flushing = False

    async def _audit(self, batch: AuditBatch) -> Ack | Tempfail:
        node = self._side.node
        assert node is not None
        lines = [json.dumps(event) for event in batch.events]
        return await audit_intake.take(self._host.control, node, self._side.intake, batch.id, lines)

    async def renew(self, request: RenewRequest) -> Renewed | Refusal:
        """A fresh host certificate for the key the node authenticated with: one at a time,
        a few at once and then one a minute (an agent renews every few hours)."""
        node = self._side.node
        assert node is not None
        budget = self._side.budget
        if budget.renewing:
            return Refusal(
                id=request.id, reason="renewal refused: one at a time: try again once answered"
            )
        wait = budget.renewal_wait()
        if wait:
            limits = self._host.nodes.limits
            return Refusal(
                id=request.id,
                reason=f"renewal refused: at most {limits.renewal_burst} renewals at once and "
                f"{limits.renewals_per_minute:g} a minute per node: try again in {wait} s",
            )
        budget.renewing = True
        try:
            certificate = await self._host.control.renew_host_cert(node.tenant, node.host_id)
        except ControlPlaneError as exc:
            return Refusal(id=request.id, reason=f"renewal refused: {str(exc)[:300]}")
        finally:
            budget.renewing = False
        return Renewed(id=request.id, certificate=certificate)

    async def _push_trust(self, node: models.TunnelNode, nonce: str) -> None:
        """Send the tenant's signed trust document now and whenever what it says changes
        (asked every ``TRUST_POLL_SECONDS``, spread so tunnels opened together do not ask
        together)."""
        sent: dict[str, Any] | None = None
        while True:
            wait = self._side.budget.trust_wait()  # hellos in a loop: each would be signed
            if wait:
                await asyncio.sleep(wait)
                continue
            try:
                signed = await self._host.control.trust(node.tenant, nonce)
            except ControlPlaneError as exc:
                logger.warning(
                    "trust document not pushed", extra={"node": node.host_id, "reason": str(exc)}
                )
            else:
                says = _what_it_says(signed)
                if says != sent:
                    self._send(TrustUpdate(signed=signed))
                    sent = says
            await asyncio.sleep(TRUST_POLL_SECONDS * random.uniform(0.8, 1.2))  # noqa: S311 - jitter


_BUSY = f"at most {MAX_IN_FLIGHT} requests at once on the control channel: try again"


def _what_it_says(signed: SignedTrust) -> dict[str, Any] | None:
    """The document's content without its signing time: the same trust signed again later
    is no change to push."""
    try:
        document = json.loads(base64.b64decode(signed.payload))
    except ValueError:
        return None
    if isinstance(document, dict):
        document.pop("issued", None)
        return document
    return None

"""The proxy's end of a tunnel's control channel (``protocol.tunnel_messages``).

One session channel per tunnel connection carries everything a node says to the platform
besides sessions and recordings: the versioned hello, heartbeats, audit batches and
certificate renewals (served by ``tunnel_requests``), and the trust document the proxy
pushes at hello and whenever it changes. Requests are served concurrently, at most
``MAX_IN_FLIGHT`` at once, and answered by id.

The channel is held open for the tunnel's life, so an idle one must cost little (the
proxy's memory per idle tunnel, docs/benchmarks.md): it is served by asyncssh callbacks
(``ControlSession``), not by a process with stream readers and a task. While it is idle it
holds no task, no coroutine and no reader: a line that arrives is decoded in
``data_received``; a request or a heartbeat gets a task while it is served; the hello's
deadline and the next trust poll are timers (decision 0021).
"""

import asyncio
import base64
import collections
import hashlib
import json
import logging
import random

import asyncssh

from jumpgate.edge_proxy.control import ControlPlaneError
from jumpgate.edge_proxy.tunnel_requests import NodeRequests, OverPace, TunnelSide, pace
from jumpgate.protocol.channel_window import bound_receive_window
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel_messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSIONS,
    AuditBatch,
    Heartbeat,
    Hello,
    Message,
    MessageError,
    PolicyUpdate,
    Refusal,
    RenewRequest,
    RolesRequest,
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

_BUSY = f"at most {MAX_IN_FLIGHT} requests at once on the control channel: try again"


def _request_id(line: str) -> int | None:
    """The ``id`` of a line that did not decode, if it has one: its refusal names it, so a
    node waiting for that answer gets it."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    found = value.get("id") if isinstance(value, dict) else None
    return found if isinstance(found, int) and 0 <= found < 2**53 else None


class ControlSession(asyncssh.SSHServerSession[str]):
    """One tunnel's control channel, from its hello until the node closes it.

    Lines are taken in order: while a heartbeat is written the channel stops reading (the
    node's window stays bounded, decision 0019) and the lines after it wait. The channel ends
    (``exit``) once the node's EOF, a pace overrun or an over-long line has been answered
    and the requests in flight have been."""

    def __init__(self, side: TunnelSide) -> None:
        self._side = side  # its ``control_open`` is this channel's until it ends
        self._chan: asyncssh.SSHServerChannel[str] | None = None
        self._buffer = ""  # the line not yet ended
        self._lines: collections.deque[str] = collections.deque()  # ended, not yet served
        self._welcomed = False
        self._nonce = ""  # the hello's, echoed by every trust document pushed
        self._sent = b""  # digest of what the last trust document pushed says
        self._timer: asyncio.TimerHandle | None = None  # the hello's deadline, the next poll
        self._trust: asyncio.Task[None] | None = None  # a trust poll under way
        self._in_flight = 0  # requests being served
        self._audit_refused = False  # the last audit batch answered was told to wait
        self._busy = False  # a heartbeat is being written: the lines after it wait
        self._eof = False
        self._status: int | None = None  # set: ending with it once nothing is in flight
        self._released = False  # ``control_open`` given back
        self._policy = False  # joined its tenant's policy pushes (after welcome and trust)

    def connection_made(self, chan: asyncssh.SSHServerChannel[str]) -> None:
        self._chan = chan
        # Requests wait for budgets: without this asyncssh would let the node send another
        # window at each resume, to be decrypted and buffered (decision 0019).
        bound_receive_window(chan)

    def session_started(self) -> None:
        if self._side.node is None:
            self._end(1)
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(HELLO_SECONDS, self._hello_late)

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        if self._status is not None:
            return
        # One split per chunk: taking a line at a time copied the rest of the buffer each
        # time, and a node sending blank lines (not paced) kept the proxy busy doing it
        *ended, self._buffer = (self._buffer + data).split("\n")
        self._lines.extend(line for line in ended if line.strip())
        self._take_lines()

    def eof_received(self) -> bool:
        self._eof = True
        self._take_lines()
        return True  # answers in flight are still sent

    def connection_lost(self, exc: Exception | None) -> None:
        if self._status is None:
            self._status = 0
        self._stop_polling()
        self._buffer = ""
        self._lines.clear()
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._side.control_open = False
        node = self._side.node
        if self._policy and node is not None:
            self._policy = False
            self._side.host.policies.leave(node.tenant, self)

    def send_policy(self, update: PolicyUpdate) -> None:
        """Push the tenant's locks and roles revision (``node_policy``)."""
        if self._status is None:
            self._send(update)

    def _join_policy(self) -> None:
        """Once welcomed and sent its first trust document, the node gets the policy."""
        node = self._side.node
        if not self._policy and self._status is None and node is not None:
            self._policy = True
            self._side.host.policies.join(node.tenant, self)

    # Lines

    def _take_lines(self) -> None:
        """Serve the complete lines buffered, in order, until one makes the others wait."""
        while not self._busy and self._status is None:
            if self._lines:
                self._line(self._lines.popleft())
                continue
            if len(self._buffer) > MAX_MESSAGE_BYTES:
                self._buffer = ""
                self._bad_stream(f"a message is longer than {MAX_MESSAGE_BYTES} bytes")
            elif self._eof:
                line, self._buffer = self._buffer, ""
                if line.strip():
                    self._line(line)
                if self._status is None and not self._busy:
                    self._end(0)
            return

    def _line(self, line: str) -> None:
        if not self._welcomed:
            self._hello(line)
            return
        try:
            self._request(line)
        except OverPace:
            limits = self._side.host.nodes.limits
            self._send(
                Tempfail(
                    reason=f"more than {limits.heartbeat_burst} heartbeats at once or "
                    f"{limits.heartbeats_per_second:g} a second: send one when something "
                    "changes"
                )
            )
            self._end(1)

    def _bad_stream(self, reason: str) -> None:
        """Nothing after an over-long line can be trusted to start a line: end the channel."""
        if self._welcomed:
            self._send(Refusal(reason=reason[:300]))
        else:
            self._send(Refusal(reason=f"the first message must be a hello: {reason}"[:300]))
        self._end(1)

    def _hello_late(self) -> None:
        self._timer = None
        if not self._welcomed and self._status is None:
            self._send(Refusal(reason="the first message must be a hello: "))
            self._end(1)

    def _hello(self, line: str) -> None:
        node = self._side.node
        assert node is not None
        try:
            message = decode(line)
            if not isinstance(message, Hello):
                raise MessageError(f"got {message.type!r}")
        except MessageError as exc:
            self._send(Refusal(reason=f"the first message must be a hello: {exc}"[:300]))
            self._end(1)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        version = choose_version(PROTOCOL_VERSIONS, message.versions)
        if version is None:
            reason = mismatch(PROTOCOL_VERSIONS, message.versions)
            logger.warning(
                "tunnel hello refused",
                extra={"node": node.host_id, "tenant": node.tenant, "reason": reason},
            )
            self._send(Refusal(reason=reason))
            self._end(1)
            return
        self._welcomed = True
        self._send(
            Welcome(
                version=version,
                proxy_version=server_version()[:64],
                capabilities=list(PROXY_CAPABILITIES),
            )
        )
        if message.nonce:
            self._nonce = message.nonce
            self._poll_trust()
        else:
            self._join_policy()

    def _request(self, line: str) -> None:
        node = self._side.node
        assert node is not None
        budget = self._side.budget
        try:
            message = decode(line)
        except MessageError as exc:
            pace(budget)
            logger.info("bad control message", extra={"node": node.host_id, "reason": str(exc)})
            self._send(Refusal(id=_request_id(line), reason=str(exc)))
            return
        if isinstance(message, AuditBatch | RenewRequest | RolesRequest):
            if (
                isinstance(message, RenewRequest)
                or self._in_flight >= MAX_IN_FLIGHT
                or self._audit_refused
            ):
                # Answered without work (a renewal, "try again"): paced as a heartbeat line
                # is, or a node could send them without end, each decoded and answered
                pace(budget)
            if self._in_flight >= MAX_IN_FLIGHT:
                self._send(Tempfail(id=message.id, reason=_BUSY))
                return
            self._in_flight += 1
            self._side.host.spawn(self._answer(message), name="control-request")
        elif isinstance(message, Heartbeat):
            pace(budget)
            self._busy = True
            assert self._chan is not None
            self._chan.pause_reading()
            self._side.host.spawn(self._heartbeat(message), name="control-heartbeat")
        else:
            pace(budget)
            self._send(Refusal(reason=f"a node does not send {message.type!r}"))

    # Work in flight: a task each, only while it is served

    async def _answer(self, request: AuditBatch | RenewRequest | RolesRequest) -> None:
        def send(answer: Message) -> None:
            if isinstance(request, AuditBatch):
                self._audit_refused = isinstance(answer, Tempfail)
            self._send(answer)

        try:
            await NodeRequests(self._side, send).answer(request)
        finally:
            self._in_flight -= 1
            self._settle()

    async def _heartbeat(self, beat: Heartbeat) -> None:
        node = self._side.node
        assert node is not None
        try:
            await NodeRequests(self._side, self._send).heartbeat(node, beat)
        finally:
            self._busy = False
            self._take_lines()  # the lines that waited for it
            if self._status is None and not self._busy and self._chan is not None:
                self._chan.resume_reading()
            self._settle()

    def _settle(self) -> None:
        """End the channel when it is ending and nothing is in flight any more."""
        if self._status is None or self._in_flight or self._busy:
            return
        self._release()
        chan, self._chan = self._chan, None
        if chan is not None and not chan.is_closing():
            chan.exit(self._status)

    def _end(self, status: int) -> None:
        """Read nothing more; exit with ``status`` once the requests in flight are answered."""
        if self._status is not None:
            return
        self._status = status
        self._buffer = ""
        self._lines.clear()
        self._stop_polling()
        if self._chan is not None and not self._chan.is_closing():
            self._chan.pause_reading()
        self._settle()

    def _send(self, message: Message) -> None:
        chan = self._chan
        if chan is not None and not chan.is_closing():
            chan.write(encode(message).decode())

    # Trust

    def _poll_trust(self) -> None:
        """Ask for the trust document now, in a task that lives only while it asks."""
        self._timer = None
        if self._status is None and self._trust is None:
            self._trust = asyncio.get_running_loop().create_task(
                self._push_trust(), name="control-trust"
            )

    async def _push_trust(self) -> None:
        """Send the tenant's signed trust document if what it says changed since the last
        one sent; then ask again in ``TRUST_POLL_SECONDS``, spread so tunnels opened
        together do not ask together."""
        node = self._side.node
        assert node is not None
        wait = self._side.budget.trust_wait()  # hellos in a loop: each would be signed
        if wait:
            self._trust = None
            if self._status is None:
                self._timer = asyncio.get_running_loop().call_later(wait, self._poll_trust)
            return
        try:
            signed = await self._side.host.control.trust(node.tenant, self._nonce)
        except ControlPlaneError as exc:
            logger.warning(
                "trust document not pushed", extra={"node": node.host_id, "reason": str(exc)}
            )
        else:
            says = _what_it_says(signed)
            if says != self._sent:
                self._send(TrustUpdate(signed=signed))
                self._sent = says
        finally:
            self._trust = None
        self._join_policy()
        if self._status is None:
            wait = TRUST_POLL_SECONDS * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
            self._timer = asyncio.get_running_loop().call_later(wait, self._poll_trust)

    def _stop_polling(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._trust is not None:
            self._trust.cancel()
            self._trust = None


def _what_it_says(signed: SignedTrust) -> bytes:
    """A digest of the document's content without its signing time: the same trust signed
    again later is no change to push (a digest, so an idle channel keeps 32 bytes of it)."""
    try:
        document = json.loads(base64.b64decode(signed.payload))
    except ValueError:
        document = None
    if isinstance(document, dict):
        document.pop("issued", None)
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).digest()
    return b""  # unreadable: as if nothing had been sent

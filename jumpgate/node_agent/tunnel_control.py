"""The agent's end of its tunnel's control channel (``protocol.tunnel_messages``).

One session channel per tunnel: the agent says hello with the versions it speaks and a
fresh nonce, then reports itself when that changes (``heartbeats``), sends its audit
batches and asks for certificates as requests answered by id (``ControlClient.request``),
and adopts the trust documents the proxy pushes once they verify against the host CA keys
it already holds (``ControlClient.run``'s ``on_trust``). The tenant's locks and roles
revision the proxy pushes go to ``on_policy``; role definitions are asked for by name
(``RolesRequest``, docs/decisions/0034).
"""

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncssh
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.node_agent.errors import AgentError, ControlChannelError
from jumpgate.node_agent.identity import Identity
from jumpgate.protocol import certs
from jumpgate.protocol.resources import Role
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM
from jumpgate.protocol.tunnel_messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSIONS,
    Ack,
    AuditBatch,
    Heartbeat,
    Hello,
    Message,
    MessageError,
    PolicyUpdate,
    Refusal,
    Renewed,
    RenewRequest,
    RolesAnswer,
    RolesRequest,
    Tempfail,
    TrustUpdate,
    Welcome,
    decode,
    encode,
    mismatch,
)
from jumpgate.protocol.version import server_version

logger = logging.getLogger(__name__)

HELLO_SECONDS = 30.0
"""How long the agent waits for the proxy's answer to its hello."""
RENEW_CHECK_SECONDS = 600.0
LABEL_CHECK_SECONDS = 5.0
"""How often the agent looks for changed labels; it sends a heartbeat only on change."""
AGENT_CAPABILITIES = ("trust-push",)

Answer = Ack | Tempfail | Refusal | Renewed | RolesAnswer


async def _lines(process: asyncssh.SSHClientProcess[bytes]) -> AsyncIterator[bytes]:
    buffer = b""
    while True:
        chunk = await process.stdout.read(64 * 1024)
        if not chunk:
            return
        *complete, buffer = (buffer + chunk).split(b"\n")  # one split: linear in the chunk
        for line in complete:
            if line.strip():
                yield line
        if len(buffer) > MAX_MESSAGE_BYTES:
            raise ControlChannelError(f"the proxy sent a line over {MAX_MESSAGE_BYTES} bytes")


class ControlClient:
    """The agent's control channel, open and past its hello."""

    def __init__(
        self,
        process: asyncssh.SSHClientProcess[bytes],
        lines: AsyncIterator[bytes],
        welcome: Welcome,
        nonce: str,
    ) -> None:
        self._process = process
        self._lines = lines
        self.welcome = welcome
        self.nonce = nonce  # what a pushed trust document must echo
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Answer]] = {}

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection, nonce: str) -> "ControlClient":
        """Open the channel and say hello; ``ControlChannelError`` when the proxy refuses
        (the log line says what to upgrade) or answers nothing this agent understands."""
        process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding=None)
        hello = Hello(
            versions=list(PROTOCOL_VERSIONS),
            agent_version=server_version()[:64],
            capabilities=list(AGENT_CAPABILITIES),
            nonce=nonce,
        )
        process.stdin.write(encode(hello))
        lines = _lines(process)
        try:
            first = await asyncio.wait_for(anext(lines, b""), HELLO_SECONDS)
            answer = decode(first)
        except (MessageError, TimeoutError) as exc:
            process.close()
            raise ControlChannelError(f"the proxy's answer to the hello: {exc}") from exc
        if isinstance(answer, Refusal):
            process.close()
            logger.error("tunnel hello refused by the proxy", extra={"reason": answer.reason})
            raise ControlChannelError(f"the proxy refused the tunnel: {answer.reason}")
        if not isinstance(answer, Welcome) or answer.version not in PROTOCOL_VERSIONS:
            process.close()
            version = answer.version if isinstance(answer, Welcome) else 0
            reason = mismatch([version], PROTOCOL_VERSIONS)
            logger.error("tunnel hello refused", extra={"reason": reason})
            raise ControlChannelError(reason)
        return cls(process, lines, answer, nonce)

    def send(self, message: Heartbeat) -> None:
        self._process.stdin.write(encode(message))

    async def request(
        self, make: Callable[[int], AuditBatch | RenewRequest]
    ) -> Ack | Tempfail | Refusal | Renewed:
        """Send the request ``make`` builds with a fresh id; its answer."""
        answer = await self._ask(make)
        if isinstance(answer, RolesAnswer):
            raise ControlChannelError("the proxy answered a request with role definitions")
        return answer

    async def _ask(self, make: Callable[[int], AuditBatch | RenewRequest | RolesRequest]) -> Answer:
        request = make(next(self._ids))
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = answer
        try:
            self._process.stdin.write(encode(request))
            return await answer
        finally:
            self._pending.pop(request.id, None)

    async def roles(self, names: list[str]) -> list[Role]:
        """The definitions of those of the roles ``names`` that exist; ``ControlChannelError``
        when the proxy answers anything else."""
        answer = await self._ask(lambda id_: RolesRequest(id=id_, names=names[:64]))
        if not isinstance(answer, RolesAnswer):
            reason = answer.reason if isinstance(answer, Tempfail | Refusal) else "no roles"
            raise ControlChannelError(f"the proxy did not send the role definitions: {reason}")
        return list(answer.roles)

    async def run(
        self,
        on_trust: Callable[[SignedTrust], Awaitable[None]],
        on_policy: Callable[[PolicyUpdate], None] | None = None,
    ) -> None:
        """Read the proxy's messages until the channel ends (``ControlChannelError``)."""
        try:
            async for line in self._lines:
                try:
                    message = decode(line)
                except MessageError as exc:
                    logger.info("bad control message from the proxy", extra={"reason": str(exc)})
                    continue
                self._take(message)
                if isinstance(message, TrustUpdate):
                    await on_trust(message.signed)
                elif isinstance(message, PolicyUpdate) and on_policy is not None:
                    on_policy(message)
            raise ControlChannelError("the proxy closed the control channel")
        finally:
            for waiting in self._pending.values():
                if not waiting.done():
                    waiting.set_exception(ControlChannelError("the control channel closed"))
            self._process.close()

    def _take(self, message: Message) -> None:
        if isinstance(message, Ack | Tempfail | Refusal | Renewed | RolesAnswer):
            if message.id is None:
                reason = message.reason if isinstance(message, Tempfail | Refusal) else ""
                if isinstance(message, Tempfail):
                    raise ControlChannelError(f"the proxy ended the control channel: {reason}")
                logger.warning("the proxy refused a control message", extra={"reason": reason})
                return
            waiting = self._pending.get(message.id)
            if waiting is not None and not waiting.done():
                waiting.set_result(message)


async def heartbeats(control: ControlClient, addr: str, labels: dict[str, str]) -> None:
    """Report this node when what it says of itself changes.

    Liveness comes from the tunnel itself (SSH keepalives): nothing is sent while nothing
    changes, which keeps the proxy's work per tunnel small.
    """
    sent: Heartbeat | None = None
    while True:
        beat = Heartbeat(
            hostname=socket.gethostname()[:253],
            addr=addr[:64],
            version=server_version()[:64],
            labels={k[:63]: v[:255] for k, v in itertools.islice(labels.items(), 256)},
        )
        if beat != sent:
            control.send(beat)
            sent = beat
        await asyncio.sleep(LABEL_CHECK_SECONDS)


async def renewal(
    control: ControlClient,
    identity: Identity,
    key: ed25519.Ed25519PrivateKey,
    renewed: Callable[[str], Awaitable[None]],
) -> None:
    """Renew the host certificate once a third of its life is left, then return (the tunnel
    ends, to come back presenting the new one). A failure is logged and ends it too."""
    while not needs_renewal(identity.certificate, time.time()):
        await asyncio.sleep(RENEW_CHECK_SECONDS)
    try:
        answer = await control.request(lambda id_: RenewRequest(id=id_))
        if not isinstance(answer, Renewed):
            reason = answer.reason if isinstance(answer, Tempfail | Refusal) else "no certificate"
            raise ControlChannelError(reason)
        check_host_certificate(answer.certificate, identity, key)
        await renewed(answer.certificate)
    except (ControlChannelError, AgentError, OSError) as exc:
        logger.warning("host certificate renewal failed", extra={"reason": str(exc)})
        return
    logger.info("host certificate renewed")


def _host_certificate(certificate: str) -> serialization.SSHCertificate:
    cert = serialization.load_ssh_public_identity(certificate.encode())
    if not isinstance(cert, serialization.SSHCertificate):
        raise ValueError("not a certificate")
    return cert


def needs_renewal(certificate: str, now: float) -> bool:
    """Whether less than a third of the certificate's validity is left."""
    cert = _host_certificate(certificate)
    lifetime = cert.valid_before - cert.valid_after
    return cert.valid_before - now < lifetime / 3


def check_host_certificate(
    certificate: str, identity: Identity, key: ed25519.Ed25519PrivateKey
) -> None:
    """Refuse a renewed certificate that is not ours or not from the tenant's host CA."""
    try:
        cert = _host_certificate(certificate)
        cert.verify_cert_signature()
    except (ValueError, InvalidSignature) as exc:
        raise AgentError("the platform sent an invalid host certificate") from exc
    ours = certs.openssh_public(key.public_key())
    if (
        cert.type is not serialization.SSHCertificateType.HOST
        or certs.openssh_public(cert.public_key()) != ours
        or not identity.trusts_host_ca(certs.openssh_public(cert.signature_key()))
    ):
        raise AgentError("the platform sent a host certificate for another key or CA")


class _Ended(Exception):
    """One of ``first_ends``' tasks returned."""


async def first_ends(*tasks: Awaitable[object]) -> None:
    """Run ``tasks`` under one ``TaskGroup`` until the first returns or raises; the others
    are cancelled and awaited. The first error (other than returning) is raised as itself."""

    async def ending(task: Awaitable[object]) -> None:
        await task
        raise _Ended

    try:
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(ending(task))
    except BaseExceptionGroup as ended:
        errors = [e for e in ended.exceptions if not isinstance(e, _Ended)]
        if errors:
            raise errors[0] from None

"""The node agent's life: join (once), then hold a tunnel to the platform for ever.

It retries everything retrying can fix (platform unreachable, proxy restarting) with
exponential backoff and jitter from 1 s to 30 s, and stops with ``AgentError`` only on what
it cannot: at the first join a refused token, a CA pin mismatch, a web certificate that does
not verify (``--insecure`` missing); a damaged identity. Once joined, a refused answer is
logged and asked again, trusting nothing new: a relay rewriting one must not stop the node.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.node_agent import audit
from jumpgate.node_agent import identity as identity_store
from jumpgate.node_agent.audit_budget import Budgets
from jumpgate.node_agent.audit_lanes import AuditLanes
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.errors import AgentError, PinMismatch
from jumpgate.node_agent.identity import Identity
from jumpgate.node_agent.join import join, rediscover
from jumpgate.node_agent.labels import DynamicLabel, evaluate
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.retry import backoff
from jumpgate.node_agent.server import LiveSessions, NodeServer
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs, ports
from jumpgate.protocol.client import APIError, AsyncClient, ClientError
from jumpgate.protocol.metrics import MetricLine
from jumpgate.protocol.names import resolve_loopback, split_host_port
from jumpgate.protocol.tunnel import DATA_HELLO, HEARTBEAT_SUBSYSTEM, LISTEN_HOST, RENEW_SUBSYSTEM
from jumpgate.protocol.version import server_version

logger = logging.getLogger(__name__)

RENEW_CHECK_SECONDS = 600.0
LABEL_CHECK_SECONDS = 5.0
"""How often the agent looks for changed labels; it sends a heartbeat only on change."""
STOP_FLUSH_SECONDS = 5.0
"""How long a stopping agent tries to send its last audit events before leaving them on disk."""
TUNNEL_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
"""AES-GCM first on the tunnel: both ends are ours, and AES-NI makes it the cheapest per byte."""


class Agent:
    """One node agent; ``run`` until ``stop`` is set."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.tunnel_up = asyncio.Event()
        self.identity: Identity | None = None
        self.tunnels_opened = 0
        self._labels = dict(config.labels)
        self._tasks: set[asyncio.Task[object]] = set()
        try:
            _private(config.data_dir)
            self.audit = AuditLanes(config.data_dir / "audit")  # on disk until the platform has it
        except OSError as exc:
            raise AgentError(
                f"cannot keep audit events in {config.data_dir / 'audit'}: {exc.strerror or exc}; "
                "check that the data dir is writable by the agent"
            ) from exc
        recordings = config.data_dir / "recordings"
        with contextlib.suppress(OSError):  # the spool says so itself when it cannot write
            _private(recordings)
        self.uploads = Uploader(Spool(recordings), self.audit)
        self.sessions = LiveSessions()
        self.budgets = Budgets()  # each session's and user's audit budget, across connections

    def _client(self, auth_server: str, insecure: bool) -> AsyncClient:
        return AsyncClient(auth_server, insecure=insecure)

    async def _load_or_join(self) -> tuple[Identity, ed25519.Ed25519PrivateKey]:
        config = self.config
        stored = identity_store.load(config.data_dir)
        if stored is not None:
            identity, key = stored
            if config.ca_pin and config.ca_pin != identity.ca_pin:
                raise AgentError(
                    f"--ca-pin {config.ca_pin} differs from the pin this node joined with "
                    f"({identity.ca_pin}): to join another cluster, remove "
                    f"{config.data_dir / 'node'}"
                )
            return identity, key
        missing = [
            flag
            for flag, value in (
                ("--token", config.token),
                ("--ca-pin", config.ca_pin),
                ("--auth-server", config.auth_server),
            )
            if not value
        ]
        if missing:
            raise AgentError(
                f"this node has not joined yet and {', '.join(missing)} is missing: "
                "get them from jumpctl nodes add"
            )
        assert config.token
        assert config.ca_pin
        assert config.auth_server
        async with self._client(config.auth_server, config.insecure) as client:
            identity, key = await join(
                client,
                token=config.token,
                ca_pin=config.ca_pin,
                nodename=config.nodename,
                insecure=config.insecure,
            )
        identity_store.save(config.data_dir, identity, key)
        logger.info("joined", extra={"tenant": identity.tenant, "host_id": identity.host_id})
        return identity, key

    async def _identity(
        self, stop: asyncio.Event
    ) -> tuple[Identity, ed25519.Ed25519PrivateKey] | None:
        attempt = 0
        while not stop.is_set():
            try:
                return await self._load_or_join()
            except AgentError:
                raise
            except (ClientError, OSError) as exc:
                if isinstance(exc, APIError) and exc.status < 500:
                    raise AgentError(str(exc)) from exc
                if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                    # A mistake to fix (--insecure, the address), not a platform to wait for
                    raise AgentError(str(exc)) from exc
                delay = backoff(attempt)
                logger.warning(
                    "platform unreachable", extra={"reason": str(exc), "retry_in": round(delay, 1)}
                )
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Join if needed, then keep the tunnel up until ``stop``."""
        joined = await self._identity(stop)
        if joined is None:
            return
        identity, key = joined
        self.identity = identity
        refreshers = [
            asyncio.create_task(self._refresh(label)) for label in self.config.dynamic_labels
        ]
        attempt = 0
        try:
            while not stop.is_set():
                try:
                    await self._hold_tunnel(self.identity, key, stop)
                    attempt = 0
                except (ClientError, OSError, asyncssh.Error) as exc:
                    logger.warning("tunnel down", extra={"reason": str(exc) or type(exc).__name__})
                except PinMismatch as exc:
                    # Once joined, a refused answer (a relay rewriting it) trusts nothing new
                    # and is asked again: ending here would let one rewrite stop the node
                    logger.error("platform's answer refused, retrying", extra={"reason": str(exc)})
                self.tunnel_up.clear()
                if stop.is_set():
                    break
                delay = backoff(attempt)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            for task in refreshers:
                task.cancel()
            await self.sessions.end_all()  # those a dial-back connection still holds

    def metric_lines(self) -> list[MetricLine]:
        """Samples for ``/metrics``."""
        return [
            ("jumpgate_agent_tunnel_up", "gauge", {}, 1.0 if self.tunnel_up.is_set() else 0.0),
            ("jumpgate_agent_tunnels_opened_total", "counter", {}, float(self.tunnels_opened)),
            (
                "jumpgate_agent_recording_parts_sent_total",
                "counter",
                {},
                float(self.uploads.parts_sent),
            ),
        ]

    async def _find(self, identity: Identity, key: ed25519.Ed25519PrivateKey) -> Identity:
        """``identity`` holding what the platform says now (the tunnel endpoint, the proxies'
        host keys, the CA keys), believed only as signed by a host CA the identity holds.
        An answer that is not (a relay rewriting it) raises ``PinMismatch`` with nothing new
        trusted (``run`` logs it and asks again); a verified change is kept in identity.json."""
        async with self._client(identity.auth_server, identity.insecure) as client:
            current = await rediscover(client, identity)
        loop = asyncio.get_running_loop()
        if not current.trusted_as_before(identity):
            await loop.run_in_executor(
                None, identity_store.save, self.config.data_dir, current, key
            )
            logger.info("trust updated from the host CA's signed document")
        self.identity = current
        return current

    def _user_cas(self) -> list[str]:
        """The user CA keys trusted when a user connects: a trust document adopted since the
        tunnel came up counts at once (decision 0022)."""
        return self.identity.user_ca_keys if self.identity is not None else []

    async def _hold_tunnel(
        self, identity: Identity, key: ed25519.Ed25519PrivateKey, stop: asyncio.Event
    ) -> None:
        identity = await self._find(identity, key)
        host, port = split_host_port(identity.tunnel_public_addr, ports.TUNNEL)
        proxy_keys = identity.proxy_host_keys
        if not proxy_keys:
            raise ClientError("the platform published no proxy host key: cannot verify the tunnel")
        ssh_key = asyncssh.import_private_key(certs.openssh_private(key))
        trusted = [asyncssh.import_public_key(k) for k in proxy_keys]
        conn = await asyncio.wait_for(
            asyncssh.connect(
                resolve_loopback(host),
                port,
                username=f"{identity.host_id}.{identity.tenant}",
                client_keys=[ssh_key],
                known_hosts=(trusted, [], []),
                keepalive_interval=15,
                keepalive_count_max=3,
                encryption_algs=TUNNEL_CIPHERS,
                # A daemon reads nothing of its user's ~/.ssh (it may not even be readable)
                config=[],
                agent_path=None,
                x509_trusted_certs=None,
                x509_trusted_cert_paths=[],
            ),
            timeout=30,
        )
        serving: dict[str, Any] = {
            "server_factory": lambda: NodeServer(
                self._user_cas(), self.audit, self.uploads, self.sessions, budgets=self.budgets
            ),
            "server_host_keys": [(ssh_key, asyncssh.import_certificate(identity.certificate))],
            "encoding": None,
            "keepalive_interval": 30,
        }
        async with conn:
            try:
                await asyncssh.listen(tunnel=conn, host=LISTEN_HOST, port=ports.NODE_SSH, **serving)
            except asyncssh.ChannelListenError as exc:
                # Not an asyncssh.Error: unless caught, it would end the agent, not the tunnel
                raise ClientError(f"the proxy refused this node's tunnel: {exc}") from exc
            try:
                await conn.start_server(
                    lambda _host, _port: self._dial_back(host, serving),
                    LISTEN_HOST,
                    ports.DIALBACK,
                    encoding=None,
                )
            except asyncssh.ChannelListenError:
                logger.info("this proxy takes no dial-back: sessions stay inside the tunnel")
            self.tunnel_up.set()
            self.tunnels_opened += 1
            logger.info("tunnel up", extra={"proxy": f"{host}:{port}"})
            local = conn.get_extra_info("sockname")
            sender = asyncio.create_task(self._heartbeats(conn, local[0] if local else ""))
            auditing = asyncio.create_task(self.audit.deliver(audit.sender(conn)))
            renewer = asyncio.create_task(self._renewal(conn, identity, key))
            uploading = asyncio.create_task(self.uploads.run(conn))
            closed = asyncio.create_task(conn.wait_closed())
            stopping = asyncio.create_task(stop.wait())
            tasks = {sender, auditing, renewer, uploading, closed, stopping}
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks - {auditing}:
                task.cancel()
            if stopping in done:
                # A batch in flight is let finish: cancelled, it would be sent again.
                await self._stop_sessions(conn)
            auditing.cancel()
            if renewer in done and renewer.exception() is not None:
                logger.warning(
                    "host certificate renewal failed", extra={"reason": str(renewer.exception())}
                )
            if sender in done and not sender.cancelled() and sender.exception() is not None:
                raise sender.exception()  # type: ignore[misc]

    async def _stop_sessions(self, conn: asyncssh.SSHClientConnection) -> None:
        """On stop (SIGTERM): end the live sessions, which writes their events, then send
        what the tunnel can take in a few seconds; the rest waits in the spool on disk."""
        await self.sessions.end_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.audit.flush(audit.sender(conn)), STOP_FLUSH_SECONDS)

    def _dial_back(self, host: str, serving: dict[str, Any]) -> Callable[..., Awaitable[None]]:
        """The handler of one dial-back request: dial the proxy, then serve SSH on that socket.

        The request names the proxy's data port and a one-time token; the agent connects to
        the proxy's address it already knows, sends the token, and answers ``ok`` on the
        request's channel (or ``error ...``). See edge_proxy.dialback.
        """

        async def handle(
            reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]
        ) -> None:
            try:
                request = json.loads(await asyncio.wait_for(reader.readline(), 10))
                port, token = int(request["port"]), str(request["token"])
                if not 0 < port < 65536 or not token.isalnum():
                    raise ValueError("bad dial-back request")
                sock = await _dial(resolve_loopback(host), port)
                loop = asyncio.get_running_loop()
                await loop.sock_sendall(sock, DATA_HELLO + token.encode() + b"\n")
                self._spawn(_serve(sock, serving))
                writer.write(b"ok\n")
            except (OSError, ValueError, KeyError, TypeError, TimeoutError) as exc:
                logger.info("dial-back failed", extra={"reason": str(exc)})
                writer.write(f"error {exc}\n".encode()[:200])
            finally:
                writer.close()

        return handle

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeats(self, conn: asyncssh.SSHClientConnection, addr: str) -> None:
        """Report this node when what it says of itself changes, on a short-lived channel.

        Liveness comes from the tunnel itself (SSH keepalives), so an idle tunnel carries no
        session: that keeps the proxy's memory per tunnel small.
        """
        sent: dict[str, object] | None = None
        while True:
            beat: dict[str, object] = {
                "hostname": socket.gethostname(),
                "addr": addr,
                "version": server_version(),
                "labels": dict(self._labels),
            }
            if beat != sent:
                async with conn.create_process(
                    subsystem=HEARTBEAT_SUBSYSTEM, encoding="utf-8"
                ) as beats:
                    beats.stdin.write(json.dumps(beat) + "\n")
                    beats.stdin.write_eof()
                    await beats.wait()
                sent = beat
            await asyncio.sleep(LABEL_CHECK_SECONDS)

    async def _renewal(
        self, conn: asyncssh.SSHClientConnection, identity: Identity, key: ed25519.Ed25519PrivateKey
    ) -> None:
        """Renew the host certificate once a third of its life is left, then end the tunnel
        so it comes back presenting the new one."""
        while not needs_renewal(identity.certificate, time.time()):
            await asyncio.sleep(RENEW_CHECK_SECONDS)
        result = await conn.run(subsystem=RENEW_SUBSYSTEM, check=True, encoding="utf-8")
        certificate = str(result.stdout).strip()
        check_host_certificate(certificate, identity, key)
        renewed = dataclasses.replace(identity, certificate=certificate)
        identity_store.save(self.config.data_dir, renewed, key)
        self.identity = renewed
        logger.info("host certificate renewed")

    async def _refresh(self, label: DynamicLabel) -> None:
        while True:
            self._labels[label.key] = await evaluate(label)
            await asyncio.sleep(label.period.total_seconds())


def _private(directory: Path) -> None:
    """Make ``directory`` (host key, recordings, audit) 0700: created so, or tightened, and
    said, when an earlier release or a person left it open to others."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = directory.stat().st_mode & 0o777
    if mode & 0o077:
        directory.chmod(0o700)
        logger.warning(
            "directory tightened to 0700", extra={"path": str(directory), "was": oct(mode)}
        )


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


async def _dial(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to ``host:port``, within a few seconds."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), 3)
    except BaseException:
        sock.close()
        raise
    return sock


async def _serve(sock: socket.socket, serving: dict[str, Any]) -> None:
    """SSH on a dialled-back socket; the connection then lives on by itself."""
    try:
        await asyncssh.run_server(sock, **serving)
    except (OSError, asyncssh.Error) as exc:
        logger.info("dial-back session failed", extra={"reason": str(exc)})

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
import logging
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.node_agent import audit, dial_back
from jumpgate.node_agent import identity as identity_store
from jumpgate.node_agent.audit_budget import Budgets
from jumpgate.node_agent.audit_lanes import AuditLanes
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.errors import AgentError, ControlChannelError, PinMismatch
from jumpgate.node_agent.identity import Identity
from jumpgate.node_agent.join import adopt, join, new_nonce, rediscover
from jumpgate.node_agent.labels import DynamicLabel, evaluate
from jumpgate.node_agent.policy_cache import NodeFacts, NodePolicy
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.retry import backoff
from jumpgate.node_agent.server import SERVER_VERSION, LiveSessions, NodeServer
from jumpgate.node_agent.session_setup import SetupPolicy
from jumpgate.node_agent.tunnel_control import (
    ControlClient,
    first_ends,
    heartbeats,
    renewal,
)
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs, ports
from jumpgate.protocol.client import APIError, AsyncClient, ClientError
from jumpgate.protocol.metrics import MetricLine
from jumpgate.protocol.names import resolve_loopback, split_host_port
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel import LISTEN_HOST

logger = logging.getLogger(__name__)

STOP_FLUSH_SECONDS = 5.0
"""How long a stopping agent tries to send its last audit events before leaving them on disk."""
TUNNEL_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
)
"""AES-GCM first on the tunnel (when configured): both ends are ours, and AES-NI makes it
the cheapest per byte."""


class Agent:
    """One node agent; ``run`` until ``stop`` is set."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.tunnel_up = asyncio.Event()
        self.identity: Identity | None = None
        self.tunnels_opened = 0
        self._labels = dict(config.labels)
        self._tasks: set[asyncio.Task[object]] = set()
        self._trust_pushed = False  # the current trust came from a tunnel's proxy
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
        self.policy = NodePolicy()  # the tenant's locks and roles, as the proxy pushes them
        pam = config.pam.service_name if config.pam.enabled else None
        self.setup = SetupPolicy(accept_env=config.accept_env, pam_service=pam)  # sshd's setup

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
            if config.auth_server and config.auth_server != identity.auth_server:
                # The platform moved (or make up runs on other ports): the address given now
                # wins, and the tunnel's is learned there again. What answers must still
                # prove the host CA this node trusts, so nothing is trusted on its word.
                logger.info(
                    "auth server changed",
                    extra={"was": identity.auth_server, "now": config.auth_server},
                )
                identity = dataclasses.replace(
                    identity, auth_server=config.auth_server, tunnel_public_addr=""
                )
                identity_store.save(config.data_dir, identity, key)
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
                except asyncssh.PermissionDenied as exc:
                    self._trust_pushed = False
                    self._refused(self.identity, exc)
                except (ClientError, OSError, asyncssh.Error, ControlChannelError) as exc:
                    self._trust_pushed = False  # the next attempt asks the platform again
                    logger.warning("tunnel down", extra={"reason": str(exc) or type(exc).__name__})
                except PinMismatch as exc:
                    self._trust_pushed = False
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

    def _refused(self, identity: Identity, exc: asyncssh.PermissionDenied) -> None:
        """The proxy refused this node's key: its identity is no longer joined (``jumpctl
        nodes rm``). Started with a token, someone is trying to join it again and the stored
        identity would be refused forever: stop and say what to do. Without one, retry (a
        proxy that could not ask the platform refuses too), saying what it may mean."""
        said = (
            f"this node's identity was removed from cluster {identity.tenant} (its tunnel is "
            f"refused as {identity.host_id}.{identity.tenant}): delete "
            f"{self.config.data_dir / 'node'} and join again (jumpctl nodes add)"
        )
        if self.config.token_unused:
            raise AgentError(f"{said}; the token was not used")
        logger.warning("tunnel refused", extra={"reason": f"{exc.reason}; if {said}"})

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
        if not self._trust_pushed or not identity.proxy_host_keys:
            # Asked over HTTPS only at first, or when the last tunnel failed before its
            # proxy pushed the trust document (a proxy key or address may have moved)
            identity = await self._find(identity, key)
        self._trust_pushed = False
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
                **self.config.algorithms().client(prefer=TUNNEL_CIPHERS),
                # A daemon reads nothing of its user's ~/.ssh (it may not even be readable)
                config=[],
                agent_path=None,
                x509_trusted_certs=None,
                x509_trusted_cert_paths=[],
            ),
            timeout=30,
        )
        serving: dict[str, Any] = {
            # ``told``: the session's origin, when a dial-back request said it (0030)
            "server_factory": lambda told=None: NodeServer(
                self._user_cas(),
                self.audit,
                self.uploads,
                self.sessions,
                budgets=self.budgets,
                setup=self.setup,
                told=told,
                policy=self.policy,
                node=NodeFacts(identity.host_id, identity.nodename, self._labels),
            ),
            "server_host_keys": [(ssh_key, asyncssh.import_certificate(identity.certificate))],
            "encoding": None,
            "keepalive_interval": 30,
            "server_version": SERVER_VERSION,
            "line_editor": False,  # sessions carry raw bytes: the channel itself, unwrapped
            **self.config.algorithms().server(),
        }
        async with conn:
            try:
                await asyncssh.listen(tunnel=conn, host=LISTEN_HOST, port=ports.NODE_SSH, **serving)
            except asyncssh.ChannelListenError as exc:
                # Not an asyncssh.Error: unless caught, it would end the agent, not the tunnel
                raise ClientError(f"the proxy refused this node's tunnel: {exc}") from exc
            try:
                await conn.start_server(
                    lambda _host, _port: dial_back.handler(host, serving, self._spawn),
                    LISTEN_HOST,
                    ports.DIALBACK,
                    encoding=None,
                )
            except asyncssh.ChannelListenError:
                logger.info("this proxy takes no dial-back: sessions stay inside the tunnel")
            nonce = new_nonce()
            control = await ControlClient.open(conn, nonce)
            self.policy.connected(control.roles)
            self.tunnel_up.set()
            self.tunnels_opened += 1
            logger.info("tunnel up", extra={"proxy": f"{host}:{port}"})
            local = conn.get_extra_info("sockname")
            try:
                await first_ends(
                    control.run(
                        lambda signed: self._trusted(signed, key, nonce), self.policy.update
                    ),
                    heartbeats(control, local[0] if local else "", self._labels),
                    self._auditing(control, stop),
                    renewal(control, identity, key, lambda cert: self._renewed(cert, key)),
                    self.uploads.run(conn),
                    conn.wait_closed(),
                )
            except ControlChannelError:
                if not conn.is_closed():
                    raise  # else the tunnel went down, which closed the channel
            finally:
                self.policy.connected(None)  # its locks stay in force

    async def _auditing(self, control: ControlClient, stop: asyncio.Event) -> None:
        """Send audit batches until ``stop``; then end the live sessions, which writes their
        events, and send what the tunnel takes in a few seconds (the rest waits on disk).
        A batch in flight when the tunnel ends is sent again by the next one."""
        delivering = asyncio.create_task(self.audit.deliver(audit.sender(control)))
        try:
            await stop.wait()
            await self.sessions.end_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.audit.flush(audit.sender(control)), STOP_FLUSH_SECONDS)
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering

    async def _trusted(
        self, signed: SignedTrust, key: ed25519.Ed25519PrivateKey, nonce: str
    ) -> None:
        """Adopt a trust document the proxy pushed, once it verifies against the host CA keys
        this node holds and answers this tunnel's nonce; else log it and trust nothing new."""
        identity = self.identity
        assert identity is not None
        try:
            current = adopt(identity, signed, nonce=nonce)
        except PinMismatch as exc:
            logger.error("pushed trust document refused", extra={"reason": str(exc)})
            return
        if not current.trusted_as_before(identity):
            await asyncio.get_running_loop().run_in_executor(
                None, identity_store.save, self.config.data_dir, current, key
            )
            logger.info("trust updated from the host CA's signed document")
        self.identity = current
        self._trust_pushed = True

    async def _renewed(self, certificate: str, key: ed25519.Ed25519PrivateKey) -> None:
        assert self.identity is not None
        renewed = dataclasses.replace(self.identity, certificate=certificate)
        identity_store.save(self.config.data_dir, renewed, key)
        self.identity = renewed

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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

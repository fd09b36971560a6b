"""Proxy peering: a user's proxy reaches a node whose tunnel another proxy holds.

Behind one load balancer a node's tunnel lands on one proxy and a user's connection on
another. The node's record names the proxy holding its tunnel, and each proxy's liveness
record names its peer address, so the user's proxy asks the control plane where the node is
(``locate``) and relays through that proxy's peer listener (port 3021), as Teleport's proxy
peering does: an agent needs one tunnel, not one per proxy.

Proxies authenticate each other with SSH certificates from the platform's proxy CA
(``control_plane.proxies``): the dialling proxy shows a user certificate naming its id, the
proxy it reaches a host certificate naming its id, which the dialler checks against the id
the control plane gave for the node. One SSH connection per peer carries every relayed
session as a channel to ``<host_id>.<tenant>``. The user's proxy has already authorized the
session (node still joined, user not locked); the peer only splices the channel onto the
node, as it would a session of its own, and refuses a node it does not hold.

The user's session stays end to end with the node: the hop between proxies carries it as
it is, inside the peers' own SSH connection.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.edge_proxy.splice import ChannelSide, Splice
from jumpgate.protocol import models
from jumpgate.protocol.names import split_host_port
from jumpgate.protocol.ssh_algorithms import Algorithms
from jumpgate.protocol.tunnel_messages import SessionOrigin

logger = logging.getLogger(__name__)

RENEW_SECONDS = 3 * 3600.0
"""Peering certificates last 24 hours; they are renewed every three."""
CONNECT_SECONDS = 10.0

ServeLocal = Callable[[str, str, Splice, SessionOrigin | None], Awaitable[None]]
"""How the proxy splices a relayed channel onto a node it holds (tenant, host_id, splice);
raises the proxy's ``Refused`` when it cannot."""


class PeerRefused(Exception):
    """A peer could not be reached or would not relay; ``str()`` is what the user is told."""


def advertised(listen: tuple[str, int], public: str) -> str:
    """Where peers reach this proxy: ``public`` (``auto`` is this host's address, the task's
    own IP on ECS), else the listen address if it is a specific one."""
    if public == "auto":
        try:
            return f"{socket.gethostbyname(socket.gethostname())}:{listen[1]}"
        except OSError as exc:
            raise ValueError(
                f"peer_public_addr auto: this host's address is unknown ({exc})"
            ) from exc
    if public:
        return public
    if listen[0] in ("", "0.0.0.0", "::"):  # noqa: S104 - refused, not bound
        raise ValueError("set peer_public_addr: peers cannot reach a wildcard listen address")
    return f"{listen[0]}:{listen[1]}"


class Peering:
    """This proxy's peer listener and its connections to other proxies."""

    def __init__(
        self,
        control: ControlPlaneClient,
        proxy_id: str,
        serve: ServeLocal,
        algorithms: Algorithms | None = None,
    ) -> None:
        self._control = control
        self._algorithms = algorithms or Algorithms()
        self.proxy_id = proxy_id
        self.serve_local = serve
        self._key = asyncssh.generate_private_key("ssh-ed25519")
        self._certs: models.ProxyCertificates | None = None
        self._server: asyncssh.SSHAcceptor | None = None
        self._peers: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        self.addr = ""

    @property
    def ca(self) -> str:
        assert self._certs is not None
        return self._certs.ca

    async def _renew(self) -> None:
        public = self._key.export_public_key("openssh").decode().strip()
        self._certs = await self._control.proxy_certificates(self.proxy_id, public)
        if self._server is not None:
            self._server.update(server_host_keys=[self._host_pair()])

    def _host_pair(self) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        assert self._certs is not None
        return self._key, asyncssh.import_certificate(self._certs.host_certificate)

    async def start(self, listen: tuple[str, int], public: str) -> int:
        """Get certificates, listen for peers; the bound port (0 picks a free one)."""
        await self._renew()
        self._server = await asyncssh.listen(
            listen[0],
            listen[1],
            server_factory=lambda: _PeerServer(self),
            server_host_keys=[self._host_pair()],
            encoding=None,
            keepalive_interval=30,
            keepalive_count_max=3,
            **self._algorithms.server(),
        )
        port = int(self._server.sockets[0].getsockname()[1])
        self.addr = advertised((listen[0], port), public)
        return port

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                await self._renew()
            except ControlPlaneError as exc:
                logger.warning("peering certificates not renewed", extra={"reason": str(exc)})

    async def _connect(self, remote: models.NodeLocation) -> asyncssh.SSHClientConnection:
        assert self._certs is not None
        host, port = split_host_port(remote.peer_addr, 0)
        user_cert = asyncssh.import_certificate(self._certs.user_certificate)
        ca = asyncssh.import_public_key(self._certs.ca)
        return await asyncio.wait_for(
            asyncssh.connect(
                host,
                port,
                username=self.proxy_id,
                client_keys=[(self._key, user_cert)],
                known_hosts=([], [ca], []),
                host_key_alias=remote.proxy,
                config=[],
                agent_path=None,
                encoding=None,
                keepalive_interval=30,
                keepalive_count_max=3,
                **self._algorithms.client(),
            ),
            CONNECT_SECONDS,
        )

    async def _connection(self, remote: models.NodeLocation) -> asyncssh.SSHClientConnection:
        """The connection to ``remote``'s proxy: one per peer, made when first needed."""
        key = f"{remote.proxy}@{remote.peer_addr}"
        task = self._peers.get(key)
        if task is None or (
            task.done()
            and (task.cancelled() or task.exception() is not None or task.result().is_closed())
        ):
            task = asyncio.ensure_future(self._connect(remote))
            self._peers[key] = task
        try:
            return await asyncio.shield(task)
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            if self._peers.get(key) is task:
                del self._peers[key]
            logger.warning(
                "peer proxy unreachable",
                extra={"peer": remote.proxy, "peer_addr": remote.peer_addr, "reason": str(exc)},
            )
            raise PeerRefused(
                f"node {remote.nodename!r} is on proxy {remote.proxy}, which cannot be "
                "reached now: try again"
            ) from None

    async def relay(
        self, remote: models.NodeLocation, splice: Splice, origin: SessionOrigin | None = None
    ) -> None:
        """Open ``splice``'s node side through the proxy holding ``remote``'s tunnel; the
        channel's originator fields carry ``origin`` on (decision 0030)."""
        if not remote.peer_addr:
            raise PeerRefused(
                f"node {remote.nodename!r} is on proxy {remote.proxy}, which does not peer: "
                "try again once it reconnects"
            )

        for attempt in (1, 2):  # a cached connection may have died since: one fresh try
            conn = await self._connection(remote)
            try:
                await conn.create_connection(
                    splice.node_channel,
                    f"{remote.host_id}.{remote.tenant}",
                    22,
                    *(origin.originator() if origin is not None else ()),
                )
                return
            except asyncssh.ChannelOpenError as exc:
                raise PeerRefused(exc.reason) from None
            except (OSError, asyncssh.Error) as exc:
                conn.close()
                if attempt == 2:
                    raise PeerRefused(f"relay to proxy {remote.proxy} failed: {exc}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._peers.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
        self._peers.clear()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()


class _PeerServer(asyncssh.SSHServer):
    """One peer proxy's connection: channels to ``<host_id>.<tenant>:22`` of nodes held here."""

    def __init__(self, peering: Peering) -> None:
        self._peering = peering
        self._peer = ""

    def begin_auth(self, username: str) -> bool:
        self._peer = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        public = key.export_public_key("openssh").decode().strip()
        trusted = public == self._peering.ca.strip()
        if not trusted:
            logger.warning("peer refused: not signed by the proxy CA", extra={"peer": username})
        return trusted

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        host_id, _, tenant = dest_host.partition(".")
        if not host_id or not tenant or dest_port != 22:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "peers relay to <host_id>.<tenant>:22"
            )
        # an authenticated peer's word: the session's id and its user's address (0030)
        return self._open(tenant, host_id, SessionOrigin.from_originator(orig_host, orig_port))

    async def _open(self, tenant: str, host_id: str, origin: SessionOrigin | None) -> ChannelSide:
        splice = Splice()
        try:
            await self._peering.serve_local(tenant, host_id, splice, origin)
        except Exception as exc:  # the proxy's Refused, or anything else: the peer is told
            logger.info(
                "relayed session refused",
                extra={"peer": self._peer, "node": host_id, "reason": str(exc)},
            )
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from None
        assert isinstance(splice.user, ChannelSide)
        return splice.user

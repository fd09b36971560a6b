"""Simulated node agents: many joined identities holding idle tunnels from one process.

Each is a real join (token, host key, host certificate) and a real SSH connection to the
tunnel endpoint that registers a tunnel and sends one heartbeat, as the agent does; what is
simulated is only that they share a process.
"""

import asyncio
import secrets
import time
from dataclasses import dataclass

import asyncssh
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import calls, certs, models, ports
from jumpgate.protocol.client import APIError, Client
from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM, LISTEN_HOST
from jumpgate.protocol.tunnel_messages import (
    PROTOCOL_VERSIONS,
    Heartbeat,
    Hello,
    Welcome,
    decode,
    encode,
)


@dataclass
class Joined:
    host_id: str
    key: asyncssh.SSHKey


def join_many(client: Client, tenant: str, count: int) -> list[Joined]:
    """``count`` nodes joined with one multi-use token."""
    token = client.send(calls.add_token(models.TokenCreateRequest(ttl_seconds=3600))).token
    joined = []
    for n in range(count):
        key = ed25519.Ed25519PrivateKey.generate()
        body = models.JoinRequest(
            token=token, public_key=certs.openssh_public(key.public_key()), nodename=f"sim-{n}"
        )
        answer = _paced(client, calls.join(body))
        joined.append(
            Joined(answer.host_id, asyncssh.import_private_key(certs.openssh_private(key)))
        )
    return joined


def _paced(client: Client, call: calls.Call[models.JoinResponse]) -> models.JoinResponse:
    """``call``'s answer, waiting out the platform's per-source pace of unauthenticated calls
    (429, decision 0019): joins from one address are held to it, as they should be."""
    for _ in range(120):
        try:
            return client.send(call)
        except APIError as exc:
            if exc.status != 429:
                raise
            time.sleep(1.0)
    raise RuntimeError("the platform kept answering 429 for two minutes")


async def hold_tunnel(port: int, tenant: str, node: Joined) -> asyncssh.SSHClientConnection:
    """One idle tunnel: connect, register, send one heartbeat, then stay quiet."""
    conn = await asyncssh.connect(
        "127.0.0.1",
        port,
        username=f"{node.host_id}.{tenant}",
        client_keys=[node.key],
        known_hosts=None,
        keepalive_interval=0,
    )
    await conn.forward_remote_port(LISTEN_HOST, ports.NODE_SSH, "127.0.0.1", 9)
    # The control channel stays open for the tunnel's life, as the agent's does
    control = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
    # With a nonce, as an agent's: the proxy pushes the trust document and polls it after
    hello = Hello(versions=list(PROTOCOL_VERSIONS), nonce=secrets.token_urlsafe(24))
    control.stdin.write(encode(hello).decode())
    welcome = decode(await control.stdout.readline())
    if not isinstance(welcome, Welcome):
        raise RuntimeError(f"the proxy refused the hello: {welcome}")
    beat = Heartbeat(hostname="sim", addr="127.0.0.1", version="bench")
    control.stdin.write(encode(beat).decode())
    return conn


async def hold_many(
    port: int, tenant: str, nodes: list[Joined], batch: int = 10
) -> list[asyncssh.SSHClientConnection]:
    """Open every tunnel, ``batch`` at a time (50 at once, on a loaded machine, had some
    refused with PermissionDenied, before issue 15 too; 10 at once never were)."""
    conns: list[asyncssh.SSHClientConnection] = []
    for start in range(0, len(nodes), batch):
        conns += await asyncio.gather(
            *(hold_tunnel(port, tenant, n) for n in nodes[start : start + batch])
        )
    return conns

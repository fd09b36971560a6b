"""Simulated node agents: many joined identities holding idle tunnels from one process.

Each is a real join (token, host key, host certificate) and a real SSH connection to the
tunnel endpoint that registers a tunnel and sends one heartbeat, as the agent does; what is
simulated is only that they share a process.
"""

import asyncio
from dataclasses import dataclass

import asyncssh
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import calls, certs, models, ports
from jumpgate.protocol.client import Client
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
        answer = client.send(calls.join(body))
        joined.append(
            Joined(answer.host_id, asyncssh.import_private_key(certs.openssh_private(key)))
        )
    return joined


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
    control.stdin.write(encode(Hello(versions=list(PROTOCOL_VERSIONS))).decode())
    welcome = decode(await control.stdout.readline())
    if not isinstance(welcome, Welcome):
        raise RuntimeError(f"the proxy refused the hello: {welcome}")
    beat = Heartbeat(hostname="sim", addr="127.0.0.1", version="bench")
    control.stdin.write(encode(beat).decode())
    return conn


async def hold_many(
    port: int, tenant: str, nodes: list[Joined], batch: int = 50
) -> list[asyncssh.SSHClientConnection]:
    """Open every tunnel, ``batch`` at a time."""
    conns: list[asyncssh.SSHClientConnection] = []
    for start in range(0, len(nodes), batch):
        conns += await asyncio.gather(
            *(hold_tunnel(port, tenant, n) for n in nodes[start : start + batch])
        )
    return conns

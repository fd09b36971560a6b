"""A proxy that refuses the agent's forwarding request ends that tunnel, not the agent.

asyncssh raises ``ChannelListenError`` (not an ``asyncssh.Error``) when the far side refuses
``tcpip-forward``; the agent must count it as one failed attempt and retry with backoff.

The platform here is as small as the agent needs: a host CA (the control plane's own
``CertificateAuthority``), an HTTPS ``/v1/trust`` that signs what the agent trusts, and an
asyncssh proxy that authenticates the node and refuses every forwarding request. The node's
identity.json is written in the form of releases before signed trust documents, so the test
also shows such a node loads, and trusts only what the pinned CA signs.
"""

import asyncio
import json
import ssl
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.edge_proxy import tls
from jumpgate.node_agent.agent import Agent
from jumpgate.node_agent.config import AgentConfig
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType

pytestmark = pytest.mark.net


class _RefusingProxy(asyncssh.SSHServer):
    refusals = 0

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        _RefusingProxy.refusals += 1
        return False


def test_the_agent_retries_when_the_proxy_refuses_its_tunnel(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_retries(tmp_path), 60))


async def _retries(tmp_path: Path) -> None:
    host_ca = CertificateAuthority("host", KeyType.ED25519, generate_key(KeyType.ED25519))
    user_ca = certs.openssh_public(generate_key(KeyType.ED25519).public_key())
    proxy_key = asyncssh.generate_private_key("ssh-ed25519")
    proxy = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_RefusingProxy, server_host_keys=[proxy_key]
    )
    proxy_port = proxy.sockets[0].getsockname()[1]

    async def trust(request: web.Request) -> web.Response:
        # imported here so that this test also runs (and fails) on the release before it
        from jumpgate.protocol.trust import TrustDocument

        document = TrustDocument(
            tenant="acme",
            user_ca_keys=[user_ca],
            host_ca_keys=[host_ca.public_key],
            proxy_host_keys=[proxy_key.export_public_key().decode().strip()],
            tunnel_public_addr=f"127.0.0.1:{proxy_port}",
            ssh_public_addr="127.0.0.1:1",
            issued=datetime.now(UTC),
            nonce=request.query.get("nonce", ""),
        )
        return web.json_response(host_ca.sign_trust(document).model_dump(mode="json"))

    async def older(request: web.Request) -> web.Response:
        """What releases before signed documents asked (the old agent's path)."""
        return web.json_response(
            {
                "tenant": "acme",
                "user_ca_keys": [user_ca],
                "host_ca_keys": [host_ca.public_key],
                "ca_pin": certs.ca_pin(host_ca.public_key),
                "tunnel_public_addr": f"127.0.0.1:{proxy_port}",
                "proxy_host_keys": [proxy_key.export_public_key().decode().strip()],
            }
        )

    app = web.Application()
    app.router.add_get("/v1/trust", trust)
    app.router.add_get("/v1/ca", older)
    app.router.add_get("/webapi/ping", older)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    cert, key = tls.ensure_certificate(tmp_path / "tls", "localhost")
    context: ssl.SSLContext = tls.server_context(cert, key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    web_port = runner.addresses[0][1]

    node_key = ed25519.Ed25519PrivateKey.generate()
    certificate = host_ca.sign_host(
        node_key.public_key(),
        tenant="acme",
        host_id="0f1e2d3c-0000-4000-8000-000000000001",
        nodename="web-1",
        now=datetime.now(UTC),
    )
    node_dir = tmp_path / "node" / "node"
    node_dir.mkdir(parents=True)
    (node_dir / "host_key").write_bytes(certs.openssh_private(node_key))
    (node_dir / "identity.json").write_text(
        json.dumps(
            {
                "host_id": "0f1e2d3c-0000-4000-8000-000000000001",
                "tenant": "acme",
                "nodename": "web-1",
                "auth_server": f"127.0.0.1:{web_port}",
                "ca_pin": certs.ca_pin(host_ca.public_key),
                "user_ca_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnceTamperedWithUnsigned0"],
                "host_ca_keys": [host_ca.public_key],
                "certificate": certificate,
                "insecure": True,
            }
        )
    )

    agent = Agent(AgentConfig(data_dir=tmp_path / "node"))
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        for _ in range(150):
            if running.done() or _RefusingProxy.refusals >= 2:
                break
            await asyncio.sleep(0.1)
        if running.done():
            pytest.fail(f"the agent stopped: {running.exception()!r}")
        assert _RefusingProxy.refusals >= 2, "the agent did not try again"
        assert agent.identity is not None
        assert agent.identity.user_ca_keys == [user_ca], "kept what no CA signed"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 20)
        proxy.close()
        await runner.cleanup()

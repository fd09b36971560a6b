"""The tunnel's control channel on 127.0.0.1: the agent's ``ControlClient`` against the
proxy's ``TunnelServer`` over a real asyncssh tunnel, with a fake control plane.

Shown: the hello is answered with the version both speak; the proxy pushes the signed trust
document answering the agent's nonce and the agent verifies it; renewals and audit batches
are answered by id; a heartbeat is written as presence; a hello from a newer peer is refused
by either end naming both versions, and logged."""

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.edge_proxy import audit_intake
from jumpgate.edge_proxy.control import ControlPlaneClient
from jumpgate.edge_proxy.metrics import Metrics
from jumpgate.edge_proxy.node_budget import NodeBudgets
from jumpgate.edge_proxy.node_policy import NodePolicies
from jumpgate.edge_proxy.recordings import SettingsCache
from jumpgate.edge_proxy.registry import TunnelRegistry
from jumpgate.edge_proxy.tunnel_front import TunnelServer
from jumpgate.node_agent import audit
from jumpgate.node_agent.errors import ControlChannelError
from jumpgate.node_agent.identity import Identity
from jumpgate.node_agent.join import adopt, new_nonce
from jumpgate.node_agent.tunnel_control import ControlClient
from jumpgate.protocol import certs, models, ports
from jumpgate.protocol.resources import Lock, LockSpec, LockTarget, Metadata, Role
from jumpgate.protocol.trust import SignedTrust, TrustDocument, canonical, signed_bytes
from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM, LISTEN_HOST
from jumpgate.protocol.tunnel_messages import (
    PROTOCOL_VERSIONS,
    Heartbeat,
    Hello,
    PolicyUpdate,
    Refusal,
    Renewed,
    RenewRequest,
    RolesAnswer,
    RolesRequest,
    TrustUpdate,
    Welcome,
    decode,
    encode,
)
from tests.support import open_ssh_server
from tests.tunnel_probe import Probe

pytestmark = pytest.mark.net

HOST_CA = ed25519.Ed25519PrivateKey.generate()
HOST_CA_KEY = certs.openssh_public(HOST_CA.public_key())
PROXY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOKZ4iBYlUVtvj3vjoyuJSU4nlFphQwIbqaCNDNt7BJ6"


class FakeControl(ControlPlaneClient):
    """The control plane as the tunnel front sees it, answering from memory."""

    def __init__(self) -> None:
        self.presences: list[models.Presence] = []
        self.records: list[models.AuditRecord] = []
        self.roles: dict[str, list[Role]] = {"acme": [Role(metadata=Metadata(name="dev"))]}
        self.roles_asked: list[tuple[str, list[str]]] = []

    async def role_definitions(self, tenant: str, names: list[str]) -> list[Role]:
        self.roles_asked.append((tenant, names))
        return [role for role in self.roles.get(tenant, []) if role.name in names]

    async def tunnel_auth(self, tenant: str, host_id: str, public_key: str) -> models.TunnelNode:
        return models.TunnelNode(tenant=tenant, host_id=host_id, nodename="web-1")

    async def presence(self, presence: models.Presence) -> None:
        self.presences.append(presence)

    async def audit(self, events: list[models.AuditRecord]) -> None:
        self.records.extend(events)

    async def renew_host_cert(self, tenant: str, host_id: str) -> str:
        return f"ssh-ed25519-cert-v01@openssh.com AAAA-for-{host_id}"

    async def trust(self, tenant: str, nonce: str) -> SignedTrust:
        document = TrustDocument(
            tenant=tenant,
            user_ca_keys=[HOST_CA_KEY],
            host_ca_keys=[HOST_CA_KEY],
            proxy_host_keys=[PROXY_KEY],
            tunnel_public_addr="acme.example.test:3024",
            ssh_public_addr="acme.example.test:3023",
            issued=datetime.now(UTC),
            nonce=nonce,
        )
        payload = canonical(document)
        return SignedTrust(
            payload=base64.b64encode(payload).decode(),
            signature=base64.b64encode(HOST_CA.sign(signed_bytes(payload))).decode(),
            signer=HOST_CA_KEY,
        )


class FakeHost:
    """The proxy a ``TunnelServer`` belongs to (``tunnel_front.TunnelHost``)."""

    def __init__(self) -> None:
        self.fake = FakeControl()
        self.control: ControlPlaneClient = self.fake
        self.proxy_id = "proxy-1"
        self.registry = TunnelRegistry()
        self.metrics = Metrics()
        self.recording_settings = SettingsCache(self.control)
        self.audit_budget = audit_intake.AuditBudget()
        self.audit_intakes: dict[tuple[str, str], audit_intake.TunnelAudit] = {}
        self.nodes = NodeBudgets()
        self.policies = NodePolicies(self.fake)
        self.tasks: set[asyncio.Task[object]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, object], name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _as_node(
    host: FakeHost, body: Callable[[asyncssh.SSHClientConnection], Awaitable[Any]]
) -> Any:
    """``body`` on a tunnel connection to a ``TunnelServer`` of ``host``, its tunnel up."""
    acceptor = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=lambda: TunnelServer(host),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encoding="utf-8",
    )
    port = acceptor.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="node-1.acme",
            client_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            known_hosts=None,
            config=[],
            agent_path=None,
        ) as conn:
            await conn.start_server(lambda *_: None, LISTEN_HOST, ports.NODE_SSH)
            return await body(conn)
    finally:
        acceptor.close()


def _identity() -> Identity:
    return Identity(
        host_id="node-1",
        tenant="acme",
        nodename="web-1",
        auth_server="acme.example.test:3080",
        ca_pin=certs.ca_pin(HOST_CA_KEY),
        user_ca_keys=[],
        host_ca_keys=[HOST_CA_KEY],
        certificate="",
        insecure=False,
    )


def test_the_control_channel_carries_hello_trust_requests_and_heartbeats() -> None:
    host = FakeHost()

    async def body(conn: asyncssh.SSHClientConnection) -> None:
        nonce = new_nonce()
        control = await ControlClient.open(conn, nonce)
        assert control.welcome.version == max(PROTOCOL_VERSIONS)
        pushed: asyncio.Queue[SignedTrust] = asyncio.Queue()
        reading = asyncio.create_task(control.run(pushed.put))
        try:
            signed = await asyncio.wait_for(pushed.get(), 10)
            adopted = adopt(_identity(), signed, nonce=nonce)
            assert adopted.proxy_host_keys == [PROXY_KEY]
            assert adopted.tunnel_public_addr == "acme.example.test:3024"
            # Two requests at once: each answer finds its own request
            renewed, _ = await asyncio.gather(
                control.request(lambda id_: RenewRequest(id=id_)),
                audit.sender(control)([audit.event("exec", command="true", user="alice")]),
            )
            assert isinstance(renewed, Renewed), renewed
            assert renewed.certificate.endswith("AAAA-for-node-1")
            [record] = host.fake.records
            assert (record.type, record.tenant, record.fields["server_id"]) == (
                "exec",
                "acme",
                "node-1",
            )
            control.send(Heartbeat(hostname="web-1", labels={"env": "prod"}))
            for _ in range(100):
                if host.fake.presences:
                    break
                await asyncio.sleep(0.05)
            [presence] = host.fake.presences
            assert (presence.tenant, presence.proxy, presence.labels) == (
                "acme",
                "proxy-1",
                {"env": "prod"},
            )
        finally:
            reading.cancel()

    asyncio.run(asyncio.wait_for(_as_node(host, body), 30))


def test_the_proxy_refuses_a_hello_of_only_an_unknown_newer_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    newer = max(PROTOCOL_VERSIONS) + 1

    async def body(conn: asyncssh.SSHClientConnection) -> tuple[object, int | None]:
        process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
        process.stdin.write(encode(Hello(versions=[newer])).decode())
        answer = decode(await asyncio.wait_for(process.stdout.readline(), 10))
        result = await asyncio.wait_for(process.wait(check=False), 10)
        return answer, result.exit_status

    with caplog.at_level(logging.WARNING, logger="jumpgate.edge_proxy.tunnel_control"):
        answer, status = asyncio.run(asyncio.wait_for(_as_node(FakeHost(), body), 30))
    assert isinstance(answer, Refusal), answer
    said = f"the proxy speaks {max(PROTOCOL_VERSIONS)}, the agent speaks {newer}"
    assert said in answer.reason
    assert status == 1
    [logged] = [r for r in caplog.records if r.getMessage() == "tunnel hello refused"]
    assert said in logged.__dict__["reason"]


def test_the_agent_refuses_a_welcome_of_an_unknown_newer_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy answering with a version this agent never offered: the agent says to upgrade."""
    newer = max(PROTOCOL_VERSIONS) + 1

    async def proxy(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await process.stdin.readline()
        process.stdout.write(encode(Welcome(version=newer)))
        await process.stdin.read()
        process.exit(0)

    async def attempt() -> str:
        server, port = await open_ssh_server(proxy)
        try:
            async with asyncssh.connect(
                "127.0.0.1", port, username="node", known_hosts=None, config=[], agent_path=None
            ) as conn:
                with pytest.raises(ControlChannelError) as refused:
                    await ControlClient.open(conn, new_nonce())
                return str(refused.value)
        finally:
            server.close()

    with caplog.at_level(logging.ERROR, logger="jumpgate.node_agent.tunnel_control"):
        said = asyncio.run(asyncio.wait_for(attempt(), 30))
    assert f"the proxy speaks {newer}, the agent speaks {max(PROTOCOL_VERSIONS)}" in said
    assert said.endswith("upgrade the agent (jumpgate on the node)")
    assert [r.getMessage() for r in caplog.records] == ["tunnel hello refused"]


def test_an_agent_of_the_earlier_release_is_still_served_on_its_subsystems() -> None:
    """Protocol 0 (``tunnel_legacy``): heartbeat, audit and renew subsystems, no hello."""
    host = FakeHost()
    event = audit.event("exec", command="true", user="alice")

    async def body(conn: asyncssh.SSHClientConnection) -> tuple[int | None, ...]:
        beat = {"hostname": "web-1", "addr": "10.0.0.5", "version": "0.9", "labels": {"a": "b"}}
        beats = await conn.run(
            subsystem="jumpgate-heartbeat", input=json.dumps(beat) + "\n", encoding="utf-8"
        )
        audited = await conn.run(
            subsystem="jumpgate-audit", input=json.dumps(event) + "\n", encoding="utf-8"
        )
        renewed = await conn.run(subsystem="jumpgate-renew", encoding="utf-8")
        assert str(renewed.stdout).startswith("ssh-ed25519-cert-v01@openssh.com ")
        return beats.exit_status, audited.exit_status, renewed.exit_status

    statuses = asyncio.run(asyncio.wait_for(_as_node(host, body), 30))
    assert statuses == (0, 0, 0)
    presence = host.fake.presences[0]  # then its tunnel going down
    assert (presence.proxy, presence.hostname, presence.labels) == ("proxy-1", "web-1", {"a": "b"})
    [record] = host.fake.records
    assert (record.type, record.fields["server_id"]) == ("exec", "node-1")


def _locks(*targets: LockTarget, revision: str = "r1") -> models.LockFeed:
    return models.LockFeed(
        locks=[
            models.TenantLock(
                tenant="acme",
                lock=Lock(metadata=Metadata(name=f"l{n}"), spec=LockSpec(target=target)),
            )
            for n, target in enumerate(targets)
        ],
        role_revisions={"acme": revision},
    )


def test_the_node_is_pushed_its_tenants_policy_after_its_trust_and_on_each_change() -> None:
    """Decision 0034: locks and the roles revision follow the welcome and the trust document;
    a change is pushed; another tenant's is not; role definitions are answered by id."""
    host = FakeHost()
    host.policies.update(_locks(LockTarget(user="alice")))

    async def body(conn: asyncssh.SSHClientConnection) -> list[object]:
        process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
        hello = Hello(versions=list(PROTOCOL_VERSIONS), nonce=new_nonce())
        process.stdin.write(encode(hello).decode())
        probe = Probe(process)
        seen: list[object] = [await probe.next(), await probe.next(), await probe.next_policy()]
        host.policies.update(_locks(revision="r2"))  # the lock lifted, a role changed
        seen.append(await probe.next_policy())
        other = models.LockFeed(
            locks=[
                models.TenantLock(
                    tenant="globex",
                    lock=Lock(
                        metadata=Metadata(name="g"),
                        spec=LockSpec(target=LockTarget(user="bob")),
                    ),
                )
            ],
            role_revisions={"acme": "r2"},
        )
        host.policies.update(other)  # another tenant's lock: nothing for this node
        answer = await probe.request(RolesRequest(id=probe.new_id(), names=["dev", "gone"]))
        seen.append(answer)
        with pytest.raises(TimeoutError):
            await probe.next_policy(timeout=0.3)
        assert probe.order[:3] == ["welcome", "trust", "policy"]
        assert host.policies  # the channel waits for policy
        await probe.close()
        for _ in range(100):  # the channel's end takes it off the tenant's list
            if not host.policies:
                break
            await asyncio.sleep(0.02)
        assert not host.policies
        return seen

    welcome, trust, first, changed, roles = asyncio.run(asyncio.wait_for(_as_node(host, body), 30))
    assert isinstance(welcome, Welcome)
    assert isinstance(trust, TrustUpdate)
    assert isinstance(first, PolicyUpdate)
    assert [lock.spec.target.user for lock in first.locks] == ["alice"]
    assert first.roles_revision == "r1"
    assert changed == PolicyUpdate(locks=[], roles_revision="r2")
    assert isinstance(roles, RolesAnswer)
    assert [role.name for role in roles.roles] == ["dev"]
    assert host.fake.roles_asked == [("acme", ["dev", "gone"])]

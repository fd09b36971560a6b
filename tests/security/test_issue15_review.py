"""Adversarial review of issue 15's refactor (typed tunnel control channel, trust as key
sets, typed client, broker, configuration): each test is one attack on the change, on
127.0.0.1 with the fakes of ``tests/net/test_tunnel_control.py`` where a proxy is needed."""

import asyncio
import contextlib
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncssh
import httpx
import pytest

from jumpgate.cli.daemon.config import ConfigError, load
from jumpgate.edge_proxy import service as service_module
from jumpgate.edge_proxy.broker import Caller, SessionBroker
from jumpgate.edge_proxy.errors import Refused
from jumpgate.edge_proxy.proxy_audit import AuditOutbox
from jumpgate.edge_proxy.registry import Tunnel
from jumpgate.edge_proxy.service import ProxyService
from jumpgate.edge_proxy.tunnel_control import MAX_IN_FLIGHT, ControlSession
from jumpgate.node_agent.join import new_nonce
from jumpgate.protocol import certs, models, routes
from jumpgate.protocol.durations import parse_duration
from jumpgate.protocol.trust import SignedTrust
from jumpgate.protocol.tunnel import CONTROL_SUBSYSTEM
from jumpgate.protocol.tunnel_messages import Hello, Refusal, Tempfail, Welcome, decode, encode
from tests.functional.conftest import Platform, plane, platform
from tests.net.test_tunnel_control import FakeControl, FakeHost, _as_node
from tests.unit import test_broker as broker_tests

__all__ = ["plane", "platform"]

pytestmark = pytest.mark.net


async def _control(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHClientProcess[str]:
    """A control channel past its hello, driven by hand (a node that does what it likes)."""
    process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
    process.stdin.write(encode(Hello(versions=[1])).decode())
    welcome = decode(await asyncio.wait_for(process.stdout.readline(), 10))
    assert isinstance(welcome, Welcome), welcome
    return process


async def _answers(process: asyncssh.SSHClientProcess[str], seconds: float) -> list[object]:
    """What the proxy says until it ends the channel or goes quiet for ``seconds``."""
    said: list[object] = []
    while True:
        try:
            line = await asyncio.wait_for(process.stdout.readline(), seconds)
        except TimeoutError:
            return said
        if not line:
            return said
        said.append(decode(line))


def test_a_flood_of_renewals_is_paced_like_a_flood_of_heartbeats() -> None:
    """A node (its own key, its own tunnel) sends renewal requests as fast as it can. Each
    past the budget is answered at once with a refusal and nothing charges the line, so
    the proxy decodes, spawns a task for and writes an answer to every one (and buffers the
    answers when the node stops reading): the pacing that bounds heartbeat lines and bad
    lines does not bound requests. Expected: ended like a heartbeat flood."""
    host = FakeHost()
    sent = 2000

    async def body(conn: asyncssh.SSHClientConnection) -> list[object]:
        process = await _control(conn)
        process.stdin.write("".join(f'{{"type":"renew","id":{i}}}\n' for i in range(sent)))
        return await _answers(process, 3)

    said = asyncio.run(asyncio.wait_for(_as_node(host, body), 60))
    answered = [m for m in said if isinstance(m, Refusal | Tempfail) and m.id is not None]
    assert len(answered) <= host.nodes.limits.heartbeat_burst + MAX_IN_FLIGHT, len(answered)
    assert any(isinstance(m, Tempfail) and m.id is None for m in said), said[-1]


def test_requests_over_the_in_flight_cap_are_paced() -> None:
    """Audit batches past the in-flight cap (8) are each answered "try again" at once; a
    node never waiting for them keeps the proxy decoding lines as fast as it sends them
    (up to 256 KiB of JSON each), where the audit subsystem refused a flooding node before
    reading it (decision 0019). Expected: the channel is ended like a heartbeat flood."""
    host = FakeHost()
    sent = 400

    async def slow_audit(events: object) -> None:
        await asyncio.sleep(30)  # the platform slow: batches stay in flight

    host.fake.audit = slow_audit  # type: ignore[method-assign]
    event = json.dumps({"type": "exec", "fields": {"command": "x" * 1000}})

    async def body(conn: asyncssh.SSHClientConnection) -> list[object]:
        process = await _control(conn)
        batch = ",".join([event] * 20)
        process.stdin.write(
            "".join(f'{{"type":"audit","id":{i},"events":[{batch}]}}\n' for i in range(sent))
        )
        return await _answers(process, 3)

    said = asyncio.run(asyncio.wait_for(_as_node(host, body), 60))
    busy = [m for m in said if isinstance(m, Tempfail) and m.id is not None]
    assert len(busy) <= host.nodes.limits.heartbeat_burst + MAX_IN_FLIGHT, len(busy)
    assert any(isinstance(m, Tempfail) and m.id is None for m in said), said[-1]


@pytest.mark.parametrize("labels", [5, [1], None])
def test_a_legacy_heartbeat_with_labels_not_a_mapping_ends_the_channel_not_the_tunnel(
    labels: object,
) -> None:
    """Protocol 0's heartbeat subsystem (``tunnel_legacy``) read ``labels`` with ``dict()``,
    which raises ``TypeError`` for a number or a list of numbers; only ``ValueError`` was
    caught (the code before the refactor caught both), so the handler failed and asyncssh
    closed the node's whole tunnel connection with a traceback in the proxy's log.
    Expected: the channel ends, the tunnel stays up."""
    host = FakeHost()

    async def body(conn: asyncssh.SSHClientConnection) -> tuple[int | None, int | None]:
        beat = json.dumps({"hostname": "web-1", "labels": labels}) + "\n"
        first = await asyncio.wait_for(
            conn.run(subsystem="jumpgate-heartbeat", input=beat, encoding="utf-8"), 10
        )
        again = await asyncio.wait_for(conn.run(subsystem="jumpgate-renew", encoding="utf-8"), 10)
        return first.exit_status, again.exit_status

    statuses = asyncio.run(asyncio.wait_for(_as_node(host, body), 30))
    assert statuses == (0, 0)


def test_a_user_ca_key_of_one_tenant_cannot_be_trusted_by_another(platform: Platform) -> None:
    """``Authorities.add_trusted`` indexes a user CA key by ``put``: trusting acme's user CA
    key in globex (an operator's paste of the wrong key, or a rotation step fed the wrong
    tenant) silently moved the index to globex, so the proxy resolved every certificate of
    acme's users to tenant globex, where that key is now trusted (users of one tenant let
    into another's), and removing globex then deleted acme's index entry (acme locked out).
    Expected: refused, the index untouched."""
    platform.invite("acme", "alice")
    platform.invite("globex", "gina")
    authorities = platform.plane.authorities
    acme_user_ca = authorities.get("acme", "user").public_key
    with pytest.raises(ValueError, match="acme"):
        authorities.add_trusted("globex", "user", acme_user_ca)
    assert platform.plane.tenants.by_user_ca(acme_user_ca) == "acme"
    assert not certs.is_trusted(acme_user_ca, authorities.trusted_keys("globex")[0])


@pytest.mark.parametrize(
    ("route", "values", "sent"),
    [
        (routes.USER_LOCK, {"name": ".."}, "/v1/users/%2E%2E/lock"),
        (routes.USER_REMOVE, {"name": ".."}, "/v1/users/%2E%2E"),
        (routes.NODE_REMOVE, {"name": "."}, "/v1/nodes/%2E"),
        (
            routes.RECORDING_PART,
            {"session_id": "s1", "index": ".."},
            "/v1/recordings/s1/parts/%2E%2E",
        ),
    ],
)
def test_a_dot_segment_parameter_stays_a_parameter_on_the_wire(
    route: routes.Route, values: dict[str, str], sent: str
) -> None:
    """``Route.url`` percent-encoded a parameter with ``quote``, which leaves ``.`` alone;
    httpx then removed ``.``/``..`` as dot segments, so ``jumpctl users lock ..`` sent
    ``PUT /v1/lock`` and a part ``..`` of a recording fetched ``/v1/recordings/s1`` (another
    route). Expected: the parameter reaches the server as one segment."""
    request = httpx.Client().build_request(
        route.method, "https://acme.localhost" + route.url(**values)
    )
    assert request.url.raw_path.decode() == sent


def test_a_users_refused_probes_cannot_push_other_tenants_events_out_of_the_outbox() -> None:
    """Every refusal is now a ``session.rejected`` event (decision 0020), with no limit: one
    signed-in user asking for names that do not exist (a refusal costs the proxy a dict
    lookup) queues one event each. The proxy's outbox holds at most 10,000 events and drops
    the oldest first, so while the platform is slow or out of reach (or the user is simply
    faster than the batches) another tenant's ``session.start`` is pushed out of the audit
    log by this user's probes. Expected: refusals of one user are throttled (counted, not
    each queued) so they cannot crowd out other tenants' events."""
    outbox = AuditOutbox(FakeControl())
    tunnels = broker_tests.FakeTunnels(
        [
            broker_tests.Held("acme", broker_tests.WEB, "web-1"),
            broker_tests.Held("globex", broker_tests.THEIRS, "payroll"),
        ]
    )
    broker: SessionBroker[broker_tests.Held, broker_tests.FakePipe] = SessionBroker(
        broker_tests.FakeControl(),
        tunnels,
        broker_tests.FakeLink(),
        outbox,
        proxy_id=broker_tests.PROXY,
        public_addr=broker_tests.PUBLIC,
    )
    gina = Caller("globex", "gina", "u-gina", "root", "192.0.2.8:50000")

    async def attack() -> None:
        await broker.open(gina, "payroll", broker_tests.FakePipe(broker))
        for _ in range(outbox.events.limit):
            with pytest.raises(Refused):
                await broker.open(broker_tests.ALICE, "nope", broker_tests.FakePipe(broker))

    asyncio.run(asyncio.wait_for(attack(), 60))
    queued = [(str(e.type), e.tenant) for e in outbox.events._items]
    assert ("session.start", "globex") in queued


@pytest.mark.parametrize(
    ("yaml_text", "said"),
    [
        # an overflowing duration was an OverflowError traceback, not one line
        ("drain_timeout: 99999999999999999d\n", "drain_timeout: "),
        ("node_gone_after: 9999999999999999999999h\n", "node_gone_after: "),
        # an operator's typo in a static token's system roles was taken silently: the
        # token then joins nothing ("nodes"), or as something no code knows
        (
            "static_tokens: [{tenant: acme, token: abcdefghijklmnop, system_roles: [nodes]}]\n",
            "static_tokens[0].system_roles",
        ),
        (
            "static_tokens: [{tenant: acme, token: abcdefghijklmnop, system_roles: []}]\n",
            "static_tokens[0].system_roles",
        ),
        # sixteen spaces are sixteen characters, and no secret
        ("static_tokens: [{tenant: acme, token: '                '}]\n", "static_tokens"),
    ],
)
def test_a_bad_daemon_setting_is_one_line_naming_its_key(
    tmp_path: Path, yaml_text: str, said: str
) -> None:
    path = tmp_path / "jumpgate.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as refused:
        load(path, {})
    assert str(refused.value).startswith(said), str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_duration_flag_too_long_is_a_value_error() -> None:
    """``parse_duration`` reads the CLIs' flags too (``jump login --ttl``): an overflow
    must be the ``ValueError`` they print as one line, not an ``OverflowError``."""
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("99999999999999999d")


class _ClosingConnection:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_one_odd_answer_does_not_stop_the_proxy_closing_removed_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy's removal poll caught only ``ControlPlaneError``; an answer that is not the
    model (``NodeRemovals.model_validate`` raises ``ValidationError``) or any other error
    ended the loop for good, which the supervisor logs once and swallows: the proxy then
    stays ready and serving while a node removed afterwards (a compromised server taken
    out) keeps its tunnel and its live sessions here. Expected: the loop carries on."""
    monkeypatch.setattr(service_module, "REMOVAL_POLL_SECONDS", 0.01)
    answers: list[object] = [
        ValueError("1 validation error for NodeRemovals"),
        [models.RemovedNode(tenant="acme", host_id="node-1", nodename="web-1")],
    ]

    class Removals(FakeControl):
        async def node_removals(self) -> list[models.RemovedNode]:
            answer = answers.pop(0) if answers else []
            if isinstance(answer, Exception):
                raise answer
            assert isinstance(answer, list)
            return answer

    proxy = ProxyService(
        Removals(),
        proxy_id="proxy-1",
        host_key=asyncssh.generate_private_key("ssh-ed25519"),
        public_addr="example.test",
    )
    connection = _ClosingConnection()
    tunnel = Tunnel("acme", "node-1", "web-1", connection, "127.0.0.1", 22, "ssh-ed25519 AAAA")  # type: ignore[arg-type]
    proxy.registry.add(tunnel)

    async def watch() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proxy._watch_removals(), 1)

    asyncio.run(watch())
    assert connection.closed


def test_blank_lines_on_the_control_channel_cost_the_proxy_little() -> None:
    """The proxy's line reader split its buffer one line at a time (each split copying the
    rest of the buffer: quadratic in the lines of a chunk), and blank lines are skipped
    without pacing: a node sending newlines kept a proxy core busy, about 1.3 s of CPU per
    MiB received here, for every tenant on it. Expected: linear, a few ms per MiB."""
    side: Any = SimpleNamespace(node=None)
    session = ControlSession(side)
    started = time.perf_counter()
    for _ in range(64):  # 4 MiB, as asyncssh hands it over: a window's chunk at a time
        session.data_received("\n" * 65536, None)
    assert time.perf_counter() - started < 1.0
    session.data_received('{"type": "nothing"', None)  # and a line still open is kept
    assert session._buffer == '{"type": "nothing"'


def test_hellos_in_a_loop_do_not_each_cost_a_signed_trust_document() -> None:
    """Every hello carrying a nonce makes the proxy ask the control plane for a freshly
    signed trust document (an internal call, a Lambda invocation on AWS, a host CA
    signature), and nothing paces hellos: a node opening its control channel, saying hello
    and closing it in a loop has the platform sign as fast as it can ask, on the internal
    workers every tenant's sessions wait for. ``/v1/trust`` over HTTPS, the way nodes asked
    before, is held to a rate per source. Expected: a node's trust documents are paced."""
    host = FakeHost()
    asked: list[str] = []
    signed = host.fake.trust

    async def counting(tenant: str, nonce: str) -> SignedTrust:
        asked.append(nonce)
        return await signed(tenant, nonce)

    host.fake.trust = counting  # type: ignore[method-assign]

    async def body(conn: asyncssh.SSHClientConnection) -> None:
        for _ in range(40):
            process = await conn.create_process(subsystem=CONTROL_SUBSYSTEM, encoding="utf-8")
            process.stdin.write(encode(Hello(versions=[1], nonce=new_nonce())).decode())
            await asyncio.wait_for(process.stdout.readline(), 10)  # the welcome
            await asyncio.sleep(0.01)  # the push starts
            process.close()
            await process.wait_closed()

    asyncio.run(asyncio.wait_for(_as_node(host, body), 60))
    assert len(asked) <= 10, len(asked)

"""Issue 14 adversarial review, finding 10: deeply nested JSON.

``json.loads`` raises ``RecursionError`` on deep nesting, and it is not a ``ValueError``: a
60 KB body of brackets got 500 on ``/v1/login`` (raised in the login limiter, before it
counted the attempt: 200 such logins in 2.5 s, none refused) and 502 on ``/v1/signup``,
``/v1/join`` and ``/v1/trust``; a nested line from a node on its tunnel (then its audit or
heartbeat channel, now its control channel) dropped the node's own tunnel connection. Each is
re-run here against a real daemon.
"""

import asyncio
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jumpgate.protocol import ports
from jumpgate.protocol.tunnel import LISTEN_HOST
from jumpgate.protocol.tunnel_messages import Ack, AuditBatch, Message, Refusal, Welcome
from tests.e2e.conftest import Cluster, Site, as_the_node, running_cluster
from tests.security.probes import insecure_tls
from tests.tunnel_probe import Probe

pytestmark = [pytest.mark.net, pytest.mark.e2e]

DEEP = b"[" * 30000 + b"]" * 30000


def _post(cluster: Cluster, path: str, body: bytes, source: str) -> tuple[int, str]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", cluster.port, context=insecure_tls(), timeout=20, source_address=(source, 0)
    )
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={"Host": cluster.proxy, "Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/v1/login", "/v1/signup", "/v1/join", "/v1/trust"])
def test_a_deeply_nested_body_is_a_bad_request(cluster: Cluster, path: str) -> None:
    status, body = _post(cluster, path, DEEP, "127.0.0.1")
    assert status == 400, (status, body[:300])
    assert json.loads(body)["detail"] == "request body is not valid JSON"
    assert "RecursionError" not in cluster.log.read_text()


@pytest.fixture
def slow_logins(tmp_path: Path) -> Iterator[Cluster]:
    """5 login attempts at once from one address, then one every 10 s: what the limiter
    does not depend on how fast this shared machine answers."""
    with running_cluster(tmp_path, "login_source_rate: 0.1\nlogin_source_burst: 5\n") as running:
        yield running


def test_a_flood_of_deeply_nested_logins_is_limited_per_address(slow_logins: Cluster) -> None:
    """The limiter counts each attempt (it raised before counting: 200 in 2.5 s, no 429)."""
    started = time.monotonic()
    statuses = [_post(slow_logins, "/v1/login", DEEP, "127.0.0.5")[0] for _ in range(20)]
    allowed = 5 + int((time.monotonic() - started) * 0.1) + 1
    assert set(statuses) <= {400, 429}, statuses
    assert statuses.count(400) <= allowed, statuses
    assert statuses[-1] == 429, statuses


@pytest.mark.parametrize(
    "nested",
    [
        "[" * 7000 + "]" * 7000,
        '{"type": "audit", "id": 1, "events": [' + "[" * 7000 + "]" * 7000 + "]}",
    ],
    ids=["a-whole-line", "an-audit-event"],
)
def test_a_nodes_deeply_nested_line_keeps_its_connection(site: Site, nested: str) -> None:
    """The node's key, with the agent stopped, holds the tunnel and its control channel."""
    site.node.kill()
    event = {
        "type": "exec",
        "outcome": "I",
        "time": datetime.now(UTC).isoformat(),
        "fields": {"user": "alice", "command": "true", "event_id": uuid.uuid4().hex},
    }

    async def attempt() -> tuple[Message | None, Message]:
        async with as_the_node(site) as conn:
            await conn.start_server(lambda *_: None, LISTEN_HOST, ports.NODE_SSH)
            probe, welcome = await Probe.open(conn)
            assert isinstance(welcome, Welcome), welcome
            probe.write(nested + "\n")
            refused = await probe.next()
            after = await probe.request(AuditBatch(id=probe.new_id(), events=[event]))
            return refused, after

    refused, after = asyncio.run(asyncio.wait_for(attempt(), 30))
    assert isinstance(refused, Refusal), refused  # one line saying why, the channel kept
    assert "\n" not in refused.reason, refused
    assert isinstance(after, Ack), "the channel did not serve the next request"
    assert "RecursionError" not in site.cluster.log.read_text()

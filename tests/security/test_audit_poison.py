"""Issue 14 adversarial review, finding 1: one oversized node event stopped that node's audit
delivery for good. A user's ``sftp mkdir`` of a 20,000-character path made an event whose line
the proxy refused, with its whole batch; the agent sent that batch again every 5 s, forever, and
every later event of every user of the node waited behind it."""

import asyncio
import collections
import http.client
import json
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from jumpgate.edge_proxy.proxy_audit import EVENT_LINGER
from jumpgate.node_agent import audit
from jumpgate.node_agent.audit_spool import AuditSpool
from jumpgate.protocol.tunnel import MAX_LINE_BYTES
from tests.e2e.conftest import LOGIN, Cluster, Site, audit_events, user_ssh_options
from tests.security.probes import insecure_tls


async def _sftp_mkdir(site: Site, path: str) -> None:
    """A logged-in user's ``mkdir`` over SFTP, through the proxy, as any client can send."""
    options = user_ssh_options(site, LOGIN)
    async with (
        asyncssh.connect("127.0.0.1", site.cluster.ssh_port, **options) as proxy,
        asyncssh.connect("web-1", 22, tunnel=proxy, **options) as node,
        node.start_sftp_client() as sftp,
    ):
        with pytest.raises(asyncssh.SFTPError):
            await sftp.mkdir(path)


@pytest.mark.e2e
@pytest.mark.net
def test_an_oversized_sftp_path_does_not_stop_the_nodes_audit(site: Site) -> None:
    asyncio.run(asyncio.wait_for(_sftp_mkdir(site, "/nonexistent/" + "a" * 20000), 30))
    marker = uuid.uuid4().hex[:12]
    answer = site.ssh(f"echo AFTER-{marker}")
    assert answer.returncode == 0, answer.stderr
    deadline = time.monotonic() + 15
    commands: list[str] = []
    while time.monotonic() < deadline:
        commands = [str(e.get("command")) for e in audit_events(site, "exec", 1, seconds=1)]
        if f"echo AFTER-{marker}" in commands:
            break
        time.sleep(0.5)
    assert f"echo AFTER-{marker}" in commands, commands
    [mkdir] = [e for e in audit_events(site, "sftp", 1) if str(e.get("path", "")).startswith("/n")]
    assert mkdir["truncated"] is True
    assert len(json.dumps(mkdir["path"])) <= 4096


def test_every_string_field_of_a_node_event_is_bounded() -> None:
    made = audit.event("sftp", outcome="W", path="é" * 20000, error="x" * 9000, user="alice")
    line = json.dumps(made)
    assert len(line.encode()) < MAX_LINE_BYTES
    assert made["fields"]["truncated"] is True
    assert made["fields"]["user"] == "alice"
    small = audit.event("exec", command="true")
    assert "truncated" not in small["fields"]


def test_a_refused_batch_is_set_aside_and_the_spool_goes_on(tmp_path: Path) -> None:
    """A batch the proxy refuses (not a lost tunnel) is moved to a dead-letter file, with one
    error line, and delivery goes on with the next events, before and after a restart."""
    directory = tmp_path / "audit"
    sent: list[str] = []

    async def send(batch: list[audit.Event]) -> None:
        if any(e["fields"].get("poison") for e in batch):
            raise audit.AuditRefused("a line is longer than 16384 bytes")
        sent.extend(str(e["fields"]["n"]) for e in batch)

    spool = AuditSpool(directory)
    spool.put(audit.event("exec", n="1"))
    spool.put(audit.event("exec", n="bad", poison=True))
    spool.put(audit.event("exec", n="2"))
    asyncio.run(asyncio.wait_for(spool.flush(send), 10))
    spool.close()
    reopened = AuditSpool(directory)  # the agent restarts
    reopened.put(audit.event("exec", n="3"))
    assert asyncio.run(asyncio.wait_for(reopened.flush(send), 10))
    assert reopened.pending_bytes == 0
    reopened.close()
    assert sent == ["1", "2", "3"]
    dead = (directory / "dead-letter.jsonl").read_text().splitlines()
    assert [json.loads(line)["fields"]["n"] for line in dead] == ["bad"]


def test_a_lost_tunnel_is_not_a_refusal(tmp_path: Path) -> None:
    """Only the proxy's refusal sets events aside; a send that fails otherwise is retried."""

    async def send(batch: list[audit.Event]) -> None:
        raise asyncssh.ConnectionLost("the tunnel went away")

    spool = AuditSpool(tmp_path / "audit")
    spool.put(audit.event("exec", n="1"))
    assert not asyncio.run(asyncio.wait_for(spool.flush(send), 10))
    assert spool.pending_bytes > 0
    assert not (tmp_path / "audit" / "dead-letter.jsonl").exists()
    spool.close()


def _logins(port: int, hosts: Iterable[str], body: bytes) -> list[int]:
    """Unauthenticated ``POST /v1/login`` calls, one per host named, as anyone on the
    Internet can send them: on one kept-alive connection while the proxy keeps it open."""
    codes: list[int] = []
    connection: http.client.HTTPSConnection | None = None
    try:
        for host in hosts:
            if connection is None:
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", port, context=insecure_tls(), timeout=20
                )
            connection.request(
                "POST",
                "/v1/login",
                body=body,
                headers={"Host": f"{host}:{port}", "Content-Type": "application/json"},
            )
            answer = connection.getresponse()
            answer.read()
            codes.append(answer.status)
            if answer.getheader("Connection", "").lower() == "close":
                connection.close()
                connection = None
    finally:
        if connection is not None:
            connection.close()
    return codes


POISON = b'{"user": "\\ud800poison", "password": "x", "otp": "1", "public_key": "x"}'
"""A login body whose ``user`` is a lone surrogate: valid JSON, not text UTF-8 can encode."""


@pytest.mark.e2e
@pytest.mark.net
def test_an_unencodable_login_name_does_not_stop_the_proxys_audit(site: Site) -> None:
    """Issue 14 round 2, finding 1: logins refused by the per-user limit queue a
    ``user.login.limited`` event naming the user. One whose name the control plane cannot
    store held up every later event of the proxy (every tenant's sessions), retried every
    5 s, and lost at shutdown. The name is now recorded escaped, and the sessions after it
    reach the audit log."""
    codes = _logins(site.cluster.port, ["acme.localhost"] * 8, POISON)
    assert 429 in codes, codes
    answer = site.ssh("true")
    assert answer.returncode == 0, answer.stderr
    ended: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not ended:
        ended = [e for e in audit_events(site, "session.end", 1, 1) if e["origin"] == "proxy"]
        time.sleep(0.5)
    assert ended, "the proxy's session.end did not reach the audit log within 15 s"
    started = [e for e in audit_events(site, "session.start", 1) if e["origin"] == "proxy"]
    assert [e["session_id"] for e in started] == [ended[0]["session_id"]]
    [limited] = audit_events(site, "user.login.limited", 1)
    assert limited["user"] == "\\ud800poison"
    assert limited["refused"] >= 1
    assert site.cluster.stop(signal.SIGTERM) == 0
    assert "audit events lost at shutdown" not in site.cluster.log.read_text()


@pytest.mark.e2e
@pytest.mark.net
def test_limited_logins_to_made_up_tenants_write_no_audit_rows(cluster: Cluster) -> None:
    """Issue 14 round 2, finding 11: past the per-address burst, each login to a new
    made-up tenant wrote one ``user.login.limited`` row under that name (the once a minute
    grouping is per tenant). Events for a tenant that does not exist are not stored."""
    made_up = [f"t{uuid.uuid4().hex[:12]}.localhost" for _ in range(80)]
    codes = collections.Counter(_logins(cluster.port, made_up, b'{"user": "x"}'))
    assert codes[429] >= 10, codes
    time.sleep(EVENT_LINGER + 2)  # the proxy sends its events in the background
    database = sqlite3.connect(f"file:{cluster.data_dir / 'audit.db'}?mode=ro", uri=True)
    try:
        [(count,)] = database.execute("select count(*) from events where tenant != 'acme'")
    finally:
        database.close()
    assert count == 0
    assert "audit events for unknown tenants dropped" in cluster.log.read_text()

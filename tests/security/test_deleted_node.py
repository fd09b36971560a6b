"""A deleted node's live tunnel is closed within 5 s, and nobody reaches the node after.

Issue 14, item 6: ``jumpctl nodes rm`` of an online node left its tunnel registered at the
proxy for 10+ minutes (until a user happened to try the node, or the agent went away), and
the node kept showing as reachable to the proxy that held it.
"""

import re
import subprocess
import time

import pytest

from tests.e2e.conftest import BIN, Site, audit_events, http_get

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _tunnels(site: Site) -> int:
    """How many tunnels the proxy holds, from its ``/metrics``."""
    status, body = http_get(site.cluster.diag_port, "/metrics")
    assert status == 200, body
    found = re.search(r"^jumpgate_proxy_tunnels(?:\{\})? (\S+)$", body, re.MULTILINE)
    assert found is not None, body
    return int(float(found.group(1)))


def test_removing_an_online_node_closes_its_tunnel_within_5s(site: Site) -> None:
    assert _tunnels(site) == 1
    live = subprocess.Popen(
        ["ssh", "-F", str(site.ssh_config), "web-1", "echo ready; sleep 120"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert live.stdout is not None
        assert live.stdout.readline() == b"ready\n"
        log_offset = len(site.cluster.log.read_text())
        site.admin.ok("jumpctl", "nodes", "rm", "web-1")
        removed = time.monotonic()
        while _tunnels(site) != 0 and time.monotonic() - removed < 10:
            time.sleep(0.1)
        took = time.monotonic() - removed
        assert took <= 5.0, f"the deleted node's tunnel was still open after {took:.1f}s"
        live.wait(timeout=max(0.1, 5.0 - (time.monotonic() - removed)))  # its session too
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(timeout=10)
        if live.stdout is not None:
            live.stdout.close()

    refused = subprocess.run(
        [str(BIN / "jump"), "ssh", "web-1", "true"],
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        b"jump: error: node 'web-1' is not online in cluster 'acme': see jump ls\n"
    )
    time.sleep(1.0)  # the agent tries again: its tunnel is refused, never registered
    assert _tunnels(site) == 0
    log = site.cluster.log.read_text()[log_offset:]
    assert '"node removed: its tunnel is closed"' in log, log[-2000:]
    [deleted] = audit_events(site, "node.delete", 1)
    assert deleted["node"] == "web-1"
    [start] = [e for e in audit_events(site, "session.start", 2) if e["origin"] == "proxy"]
    [end] = [e for e in audit_events(site, "session.end", 1) if e["origin"] == "proxy"]
    assert end["session_id"] == start["session_id"]
    # The refusal is audited too, with what the user asked for and read
    [rejected] = audit_events(site, "session.rejected", 1)
    assert (rejected["user"], rejected["nodename"], rejected["code"]) == (
        "alice",
        "web-1",
        "J2007W",
    )
    assert rejected["error"] == "node 'web-1' is not online in cluster 'acme': see jump ls"

"""One session, one id (decision 0030): the proxy's and the node's events of an ``ssh``
session share its ``session_id``, and the node knows the user's own address; every refusal
at the proxy is audited with the line the user read."""

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.e2e.conftest import (
    BIN,
    LOGIN,
    Shell,
    Site,
    audit_events,
    create_tenant,
    signup_and_login,
    user_ssh_options,
)

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _by_origin(events: list[dict[str, object]], origin: str) -> list[dict[str, object]]:
    return [e for e in events if e["origin"] == origin]


def test_proxy_and_node_events_of_one_session_share_its_id(site: Site) -> None:
    assert site.ssh("echo one").stdout == b"one\n"
    starts = audit_events(site, "session.start", 2)
    ends = audit_events(site, "session.end", 2)
    [proxy_start], [node_start] = _by_origin(starts, "proxy"), _by_origin(starts, "node")
    [proxy_end], [node_end] = _by_origin(ends, "proxy"), _by_origin(ends, "node")
    [command] = audit_events(site, "exec", 1)
    assert proxy_start["session_id"] == node_start["session_id"] == proxy_end["session_id"]
    assert node_end["session_id"] == command["session_id"] == proxy_start["session_id"]
    # the node names the user's own address, as the proxy saw it, not the proxy's
    assert node_start["remote_addr"] == proxy_start["remote_addr"]


def test_jump_ssh_sessions_share_the_id_too(site: Site) -> None:
    done = subprocess.run(
        [str(BIN / "jump"), "ssh", "web-1", "echo two"],
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == b"two\n", done.stderr
    starts = audit_events(site, "session.start", 2)
    [proxy_start], [node_start] = _by_origin(starts, "proxy"), _by_origin(starts, "node")
    assert node_start["session_id"] == proxy_start["session_id"]


def test_a_login_the_certificate_lacks_is_audited_at_the_proxy(site: Site) -> None:
    refused = subprocess.run(
        [str(BIN / "jump"), "ssh", "-l", "nobody-here", "web-1", "true"],
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1
    assert b"the proxy refused login 'nobody-here'" in refused.stderr
    [event] = audit_events(site, "auth", 1, where=lambda e: e.get("origin") == "proxy")
    assert (event["code"], event["login"]) == ("J3007W", "nobody-here")
    assert str(event["remote_addr"]).startswith("127.0.0.1:")
    assert event["error"] == (
        "login 'nobody-here' refused: the certificate does not allow it, or is not valid now"
    )


def test_an_unknown_node_and_another_tenants_node_are_audited(site: Site, tmp_path: Path) -> None:
    unknown = site.ssh("true", host="nosuch")
    line = "node 'nosuch' is not online in cluster 'acme': see jump ls"
    assert line.encode() in unknown.stderr
    [event] = audit_events(site, "session.rejected", 1)
    assert (event["code"], event["nodename"], event["error"]) == ("J2007W", "nosuch", line)
    assert (event["user"], event["login"]) == ("alice", LOGIN)

    outsider = Shell(tmp_path / "globex-home")
    created = create_tenant(outsider, site.cluster, "globex", "gina", LOGIN)
    signup_and_login(outsider, site.cluster, created["invite_token"], "gina", tenant="globex")
    refused = subprocess.run(
        [str(BIN / "jump"), "ssh", "web-1", "true"],
        env=outsider.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    theirs = "node 'web-1' is not online in cluster 'globex': see jump ls"
    assert refused.stderr == f"jump: error: {theirs}\n".encode()
    [event] = audit_events(_AdministeredBy(outsider), "session.rejected", 1)
    assert (event["user"], event["nodename"], event["error"]) == ("gina", "web-1", theirs)
    # acme's log holds only its own refusal
    assert len(audit_events(site, "session.rejected", 2, seconds=2)) == 1


def test_sessions_sharing_one_connection_have_ids_of_their_own(site: Site, tmp_path: Path) -> None:
    """OpenSSH's ControlMaster: one connection through the proxy (one proxy session), two
    session channels on the node. The first takes the proxy's id, the second one of its own
    that names the proxy's as ``proxy_session_id`` (a recording per session channel)."""
    control = str(tmp_path / "cm")
    base = ["ssh", "-F", str(site.ssh_config), "-S", control]
    subprocess.run(
        [*base, "-M", "-f", "-N", "web-1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
        check=True,
    )
    try:
        for word in ("first", "second"):
            done = subprocess.run(
                [*base, "web-1", f"echo {word}"], capture_output=True, timeout=60, check=False
            )
            assert done.stdout == f"{word}\n".encode(), done.stderr
    finally:
        subprocess.run([*base, "-O", "exit", "web-1"], capture_output=True, timeout=30)
    [proxy_start] = _by_origin(audit_events(site, "session.start", 3), "proxy")
    first, second = _by_origin(audit_events(site, "session.start", 3), "node")
    assert first["session_id"] == proxy_start["session_id"]
    assert "proxy_session_id" not in first
    assert second["proxy_session_id"] == proxy_start["session_id"]
    assert second["session_id"] not in (proxy_start["session_id"], "")
    commands = audit_events(site, "exec", 2)
    assert [c["command"] for c in commands] == ["echo first", "echo second"]
    assert [c["session_id"] for c in commands] == [first["session_id"], second["session_id"]]


def test_a_user_cannot_tell_the_node_an_origin(site: Site) -> None:
    """The originator fields a user's own direct-tcpip channel carries are the user's word:
    the proxy puts its own origin on the channel to the node, never theirs."""
    forged = "0b9a3f6e-8a77-4c1e-9d8e-2f3c4b5a6d7e"

    class Forging:
        def __init__(self, proxy: asyncssh.SSHClientConnection) -> None:
            self._proxy = proxy

        async def create_connection(self, factory: Any, host: str, port: int) -> Any:
            return await self._proxy.create_connection(
                factory, host, port, orig_host=f"{forged}@198.51.100.66", orig_port=6666
            )

        def close(self) -> None:
            self._proxy.close()

    async def run() -> str:
        options = user_ssh_options(site, LOGIN)
        async with (
            asyncssh.connect("127.0.0.1", site.cluster.ssh_port, **options) as proxy,
            asyncssh.connect("web-1", 22, tunnel=Forging(proxy), **options) as node,
        ):
            done = await node.run("echo forged", check=False)
            return str(done.stdout)

    assert asyncio.run(run()) == "forged\n"
    starts = audit_events(site, "session.start", 2)
    [proxy_start], [node_start] = _by_origin(starts, "proxy"), _by_origin(starts, "node")
    assert node_start["session_id"] == proxy_start["session_id"] != forged
    assert str(node_start["remote_addr"]).startswith("127.0.0.1:")


@dataclass(frozen=True)
class _AdministeredBy:
    """Another tenant's admin, for ``audit_events``."""

    admin: Shell

"""What the three SSH servers offer (decision 0030): the proxy's user port, its tunnel port
and a node (reached through the proxy: it has no port of its own), judged by ssh-audit and
by what Debian's OpenSSH client is told.

None offers a key exchange, cipher, MAC or host key ssh-audit fails (SHA-1, NIST curves,
group exchange below 2048 bits), and none advertises a SHA-1 signature (``ssh-rsa``,
``ssh-dss``) in ``server-sig-algs``.
"""

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.e2e.conftest import BIN, LOGIN, Site, running_site, user_ssh_options

pytestmark = [pytest.mark.e2e, pytest.mark.net]

SSH_AUDIT = [str(BIN / "ssh-audit")] if (BIN / "ssh-audit").exists() else []
SHA1_SIGNATURES = {"ssh-rsa", "ssh-dss"}
PSEUDO = ("ext-info-", "kex-strict-")
"""Names in a key exchange list that are signals, not algorithms."""


def _failed(port: int) -> list[str]:
    """Every algorithm ssh-audit fails on 127.0.0.1:``port``, as ``kind name: why``."""
    if not SSH_AUDIT:
        pytest.fail("ssh-audit is missing: pip install -e '.[dev]'")
    run = subprocess.run(
        [*SSH_AUDIT, "-j", "-n", "-t", "20", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    report = json.loads(run.stdout)
    failed = []
    for kind in ("kex", "key", "enc", "mac"):
        for entry in report.get(kind, []):
            for note in entry.get("notes", {}).get("fail", []):
                failed.append(f"{kind} {entry['algorithm']}: {note}")
    assert report.get("kex"), f"ssh-audit saw no key exchange on {port}: {run.stderr!r}"
    return failed


def _server_sig_algs(port: int) -> set[str]:
    """The ``server-sig-algs`` the server at 127.0.0.1:``port`` sends Debian's ssh client
    (its ext-info comes before authentication, which fails here: no key is offered)."""
    run = subprocess.run(
        [
            "ssh",
            "-vv",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityFile=/nonexistent",
            "-p",
            str(port),
            f"{LOGIN}@127.0.0.1",
            "true",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = re.search(rb"server-sig-algs=<([^>]*)>", run.stderr)
    assert found, f"no server-sig-algs from port {port}: {run.stderr[-2000:]!r}"
    return set(found.group(1).decode().split(","))


@contextlib.asynccontextmanager
async def _node_port(site: Site) -> AsyncIterator[int]:
    """A local port whose every connection is piped to web-1's SSH server through the proxy
    (a direct-tcpip channel, as ``ssh -J`` opens)."""
    async with asyncssh.connect(
        "127.0.0.1", site.cluster.ssh_port, **user_ssh_options(site, LOGIN)
    ) as proxy:
        piping: set[asyncio.Task[None]] = set()
        writers: list[asyncio.StreamWriter] = []

        async def copy(source: Any, sink: Any) -> None:
            with contextlib.suppress(OSError, asyncssh.Error, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError, asyncssh.Error):
                sink.write_eof()

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            try:
                to_node, from_node = await proxy.open_connection("web-1", 22, encoding=None)
            except (asyncssh.Error, OSError):
                return
            try:
                await asyncio.gather(copy(reader, from_node), copy(to_node, writer))
            finally:
                from_node.close()

        def piped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(pipe(reader, writer))
            piping.add(task)
            task.add_done_callback(piping.discard)

        server = await asyncio.start_server(piped, "127.0.0.1", 0)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(piping):
                task.cancel()
            await asyncio.gather(*piping, return_exceptions=True)
            for writer in writers:
                writer.close()
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.wait_closed()
            await server.wait_closed()


def _on_all_three(site: Site, check: Callable[[int], Any]) -> dict[str, Any]:
    """``check(port)`` for the user port, the tunnel port and the node, by name."""

    async def through_the_proxy() -> Any:
        async with _node_port(site) as port:
            return await asyncio.to_thread(check, port)

    return {
        "proxy": check(site.cluster.ssh_port),
        "tunnel": check(site.cluster.tunnel_port),
        "node": asyncio.run(through_the_proxy()),
    }


def test_ssh_audit_fails_nothing_on_the_proxy_the_tunnels_or_a_node(site: Site) -> None:
    failed = _on_all_three(site, _failed)
    assert failed == {"proxy": [], "tunnel": [], "node": []}


def test_no_sha1_signature_is_advertised(site: Site) -> None:
    offered = _on_all_three(site, _server_sig_algs)
    for server, algorithms in offered.items():
        assert {"rsa-sha2-256", "ssh-ed25519"} <= algorithms, server
        assert not algorithms & SHA1_SIGNATURES, (server, sorted(algorithms))


def test_configured_algorithms_are_the_ones_offered(tmp_path: Path) -> None:
    """``ciphers``, ``kex_algos`` and ``mac_algos`` of jumpgate.yaml are what the proxy's
    listeners offer, and the node agent's own keys what it offers; OpenSSH still connects."""
    chosen = (
        "ciphers: [aes256-gcm@openssh.com]\n"
        "kex_algos: [curve25519-sha256]\n"
        "mac_algos: [hmac-sha2-512-etm@openssh.com]\n"
    )
    with running_site(tmp_path, chosen) as site:
        offered = _on_all_three(site, _offered)
        run = site.ssh("-o", "Ciphers=aes256-gcm@openssh.com", "echo through")
        assert run.stdout == b"through\n", run.stderr
    for server in ("proxy", "tunnel"):
        assert offered[server] == {
            "kex": ["curve25519-sha256"],
            "enc": ["aes256-gcm@openssh.com"],
            "mac": ["hmac-sha2-512-etm@openssh.com"],
        }, server
    assert "curve25519-sha256" in offered["node"]["kex"]  # the node is configured apart


def _offered(port: int) -> dict[str, list[str]]:
    run = subprocess.run(
        [*SSH_AUDIT, "-j", "-n", "-t", "20", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    report = json.loads(run.stdout)
    return {
        kind: [e["algorithm"] for e in report[kind] if not e["algorithm"].startswith(PSEUDO)]
        for kind in ("kex", "enc", "mac")
    }

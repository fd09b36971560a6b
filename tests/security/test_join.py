"""A man in the middle of the join, on loopback (issue 14, item 1).

The relay is an HTTPS server with its own self-signed certificate that forwards every request
to the real platform. It passes ``/v1/ca`` through unchanged (so the public pin check holds)
and rewrites everything else the agent is told to trust: the tenant's user CA key, the
proxies' host keys and the tunnel address, wherever they appear, even inside base64 JSON
(``tampered``), or it signs what it rewrote with a CA of its own (``resigned``). It also runs
the "fake proxy": a TCP listener that counts who dials it.

A node given the real pin and ``--insecure`` must refuse the rewritten answers with one line
naming the pin, trust nothing (no identity.json, or the old one unchanged) and dial nothing.
Even a relay that changes nothing must never read the join token: the signed document names
the platform's self-signed web certificate, and the node writes the token only on a
connection presenting it (``test_a_relay_passing_everything_through_never_sees_the_token``).
"""

import asyncio
import base64
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.edge_proxy import tls
from jumpgate.protocol import calls, certs
from jumpgate.protocol.client import Client
from tests.e2e.conftest import (
    BIN,
    Cluster,
    Shell,
    create_tenant,
    running_cluster,
    signup_and_login,
    wait_for_line,
)
from tests.security.probes import insecure_tls
from tests.support import ca_issued_certificate, free_port

pytestmark = pytest.mark.e2e


def _b64json(text: str) -> Any:
    """The JSON inside a base64 string, or ``None``."""
    if len(text) < 16:
        return None
    try:
        decoded = json.loads(base64.b64decode(text, validate=True))
    except ValueError:
        return None
    return decoded if isinstance(decoded, dict | list) else None


class Relay:
    """The man in the middle: an HTTPS relay to the platform, and a fake tunnel endpoint."""

    def __init__(self, upstream: int, directory: Path) -> None:
        self.upstream = upstream
        self.directory = directory
        self.mode = "relay"  # relay | tampered | resigned
        self.swaps: dict[str, str] = {}
        self.dialled = 0  # connections to the fake tunnel endpoint
        self.rewritten: list[str] = []  # paths whose answers were rewritten
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path, body) it was sent
        self.attacker_ca = ed25519.Ed25519PrivateKey.generate()
        self.port = free_port()
        self.tunnel_port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Relay":
        self._thread.start()
        assert self._ready.wait(10), "relay did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        cert, key = tls.ensure_certificate(self.directory / "relay-tls", "localhost")
        session = aiohttp.ClientSession()

        async def relay(request: web.Request) -> web.Response:
            self.requests.append((request.method, request.path, await request.read()))
            headers = {
                k: v for k, v in request.headers.items() if k.lower() in ("host", "content-type")
            }
            async with session.request(
                request.method,
                f"https://127.0.0.1:{self.upstream}{request.path_qs}",
                data=await request.read(),
                headers=headers,
                ssl=insecure_tls(),
                server_hostname="acme.localhost",
            ) as answer:
                body = await answer.read()
                content_type = answer.headers.get("content-type", "application/json")
                status = answer.status
            if self.mode != "relay" and request.path != "/v1/ca" and status < 300:
                try:
                    body = json.dumps(self._rewrite(json.loads(body))).encode()
                    self.rewritten.append(request.path)
                except ValueError:
                    pass
            return web.Response(status=status, body=body, content_type=content_type.split(";")[0])

        async def dialled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.dialled += 1
            writer.close()

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", relay)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", self.port, ssl_context=tls.server_context(cert, key)
        )
        await site.start()
        fake_tunnel = await asyncio.start_server(dialled, "127.0.0.1", self.tunnel_port)
        self._ready.set()
        await self._stop.wait()
        fake_tunnel.close()
        await runner.cleanup()
        await session.close()

    def _rewrite(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._rewrite(v) for v in value]
        if isinstance(value, dict):
            out = {k: self._rewrite(v) for k, v in value.items()}
            if self.mode == "resigned" and {"payload", "signature"} <= set(out):
                out = self._resign(out)
            return out
        if isinstance(value, str):
            inner = _b64json(value)
            if inner is not None:
                rewritten = json.dumps(self._rewrite(inner), separators=(",", ":"))
                return base64.b64encode(rewritten.encode()).decode()
            for old, new in self.swaps.items():
                value = value.replace(old, new)
        return value

    def _resign(self, signed: dict[str, Any]) -> dict[str, Any]:
        """What the relay rewrote, signed by a CA of its own that claims to be the signer."""
        from jumpgate.control_plane.ca import CertificateAuthority
        from jumpgate.protocol.certs import KeyType
        from jumpgate.protocol.trust import TrustDocument

        document = TrustDocument.model_validate_json(base64.b64decode(signed["payload"]))
        own = CertificateAuthority("host", KeyType.ED25519, self.attacker_ca)
        return own.sign_trust(document).model_dump(mode="json")


@contextmanager
def _running_platform(tmp_path: Path) -> Iterator[tuple[Cluster, Shell]]:
    """A daemon in ``tmp_path/platform`` with tenant acme and its admin alice logged in."""
    with running_cluster(tmp_path / "platform") as cluster:
        admin = Shell(tmp_path / "home")
        created = create_tenant(admin, cluster, "acme", "alice", "root")
        signup_and_login(admin, cluster, created["invite_token"], "alice")
        yield cluster, admin


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Cluster, Shell]]:
    with _running_platform(tmp_path) as running:
        yield running


@pytest.fixture
def relay(platform: tuple[Cluster, Shell], tmp_path: Path) -> Iterator[Relay]:
    cluster, _ = platform
    with Relay(cluster.port, tmp_path) as running:
        with Client(cluster.proxy, insecure=True) as direct:
            ca = direct.send(calls.ca())
            ping = direct.send(calls.ping())
        attacker_user_ca = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
        attacker_proxy = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
        running.swaps = {
            ca.user_ca_keys[0]: attacker_user_ca,
            ping.proxy_host_keys[0]: attacker_proxy,
            ping.tunnel_public_addr: f"acme.localhost:{running.tunnel_port}",
        }
        yield running


def _token(admin: Shell) -> dict[str, Any]:
    answer = admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    assert isinstance(answer, dict)
    return answer


def _agent(
    directory: Path, *argv: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("a") as out:
        return subprocess.Popen(
            [
                str(BIN / "jumpgate"),
                "start",
                "--services=node",
                "--data-dir",
                str(directory),
                *argv,
            ],
            stdout=out,
            stderr=out,
            env={**os.environ, **(env or {})},
        )


def _refused(process: subprocess.Popen[bytes], log: Path, offset: int, pin: str) -> str:
    """The one-line error the agent stopped with; it must name the pin."""
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        pytest.fail(f"the agent did not stop: {log.read_text()[offset:][-2000:]}")
    text = log.read_text()[offset:]
    assert code == 1, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("jumpgate: error:")]
    assert len(errors) == 1, text
    assert pin in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("mode", ["tampered", "resigned"])
def test_a_rewritten_join_is_refused_and_nothing_is_trusted(
    platform: tuple[Cluster, Shell], relay: Relay, tmp_path: Path, mode: str
) -> None:
    _, admin = platform
    joining = _token(admin)
    relay.mode = mode
    node = tmp_path / "node"
    log = tmp_path / "agent.log"
    process = _agent(
        node,
        f"--token={joining['token']}",
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server=acme.localhost:{relay.port}",
        "--insecure",
        "--nodename=victim",
        log=log,
    )
    try:
        time.sleep(0.5)
        for _ in range(100):
            if process.poll() is not None or relay.dialled:
                break
            time.sleep(0.2)
        identity = node / "node" / "identity.json"
        trusted = identity.read_text() if identity.exists() else ""
        for attacker_value in relay.swaps.values():
            assert attacker_value not in trusted, f"the node trusts the relay's {attacker_value}"
        assert relay.dialled == 0, "the node dialled the relay's fake proxy"
        assert relay.rewritten, "the relay rewrote nothing: the test tests nothing"
        _refused(process, log, 0, joining["ca_pin"])
        assert not identity.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _lines(log: Path, offset: int, text: str) -> list[str]:
    return [line for line in log.read_text()[offset:].splitlines() if text in line]


def _joined_then_stopped(process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for the agent's tunnel (it joined), then stop it as an operator would: SIGTERM,
    exit 0."""
    wait_for_line(log, '"tunnel up"', process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def _edit_identity(node: Path, **fields: Any) -> Path:
    """Change ``fields`` in the stopped node's identity.json; its path."""
    identity = node / "node" / "identity.json"
    stored = json.loads(identity.read_text())
    stored.update(fields)
    identity.write_text(json.dumps(stored, indent=2))
    return identity


def _logged_while_running(
    process: subprocess.Popen[bytes], log: Path, offset: int, text: str, seconds: float
) -> list[str]:
    """The agent's log lines with ``text`` after ``offset`` once there are two (it retried);
    fails if the agent stops or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while len(_lines(log, offset, text)) < 2:
        assert process.poll() is None, log.read_text()[offset:][-2000:]
        assert time.monotonic() < deadline, log.read_text()[offset:][-2000:]
        time.sleep(0.1)
    return _lines(log, offset, text)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM an agent still running and reap it (killed if it will not stop)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_a_rewritten_discovery_on_reconnect_is_refused_and_retried(
    platform: tuple[Cluster, Shell], relay: Relay, tmp_path: Path
) -> None:
    """After the join, a refused answer is logged and retried (trusting nothing new): a
    relay rewriting one answer must not stop the node for good (issue 14)."""
    _, admin = platform
    joining = _token(admin)
    node = tmp_path / "node"
    log = tmp_path / "agent.log"
    cluster, _ = platform
    process = _agent(
        node,
        f"--token={joining['token']}",
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server={cluster.proxy}",
        "--insecure",
        "--nodename=victim",
        log=log,
    )
    try:
        _joined_then_stopped(process, log)
        # The relay now sits where the node finds the platform (a hijacked name, say)
        identity = _edit_identity(node, auth_server=f"acme.localhost:{relay.port}")
        before = identity.read_bytes()

        relay.mode = "tampered"
        offset = len(log.read_text())
        process = _agent(node, "--insecure", log=log)
        refusals = _logged_while_running(process, log, offset, "refused", 30)
        assert all(joining["ca_pin"] in line for line in refusals), refusals
        assert all(json.loads(line)["level"] == "error" for line in refusals), refusals
        assert "Traceback" not in log.read_text()[offset:]
        assert relay.dialled == 0, "the node dialled the relay's fake proxy"
        assert relay.rewritten, "the relay rewrote nothing: the test tests nothing"
        assert identity.read_bytes() == before
        assert process.poll() is None, "a refused answer after the join stopped the agent"

        relay.mode = "relay"  # the rewriting stops: the node comes back by itself
        wait_for_line(log, '"tunnel up"', process, offset=offset, seconds=45)
        assert relay.dialled == 0
        trusted = identity.read_text()
        for attacker_value in relay.swaps.values():
            assert attacker_value not in trusted, f"the node trusts the relay's {attacker_value}"
    finally:
        _stop(process)


def test_a_relay_passing_everything_through_never_sees_the_token(
    platform: tuple[Cluster, Shell], relay: Relay, tmp_path: Path
) -> None:
    """The relay changes nothing, so every signed document verifies; but its web certificate
    is not the one the signed document names, so the node sends it no token to reuse."""
    _, admin = platform
    joining = _token(admin)
    relay.mode = "relay"
    node = tmp_path / "node"
    log = tmp_path / "agent.log"
    process = _agent(
        node,
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server=acme.localhost:{relay.port}",
        "--insecure",
        "--nodename=victim",
        log=log,
        env={"JUMPGATE_TOKEN": joining["token"]},
    )
    try:
        error = _refused(process, log, 0, joining["ca_pin"])
        assert "presents a web certificate the pinned CA does not vouch for" in error, error
        assert ("GET", "/v1/trust") in {(m, p) for m, p, _ in relay.requests}, relay.requests
        assert "/v1/join" not in {p for _, p, _ in relay.requests}, relay.requests
        for _, path, body in relay.requests:
            assert joining["token"].encode() not in body, f"the relay read the token ({path})"
        assert not (node / "node" / "identity.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_insecure_is_refused_when_the_platform_names_no_self_signed_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform whose web certificate a CA issued signs no certificate digest; ``--insecure``
    would then authenticate nothing the token travels on: the node says to drop it."""
    _, cert, key = ca_issued_certificate("acme.localhost")
    monkeypatch.setenv(tls.CERT_VARIABLE, cert)
    monkeypatch.setenv(tls.KEY_VARIABLE, key)
    with _running_platform(tmp_path) as (cluster, admin):
        joining = _token(admin)
        log = tmp_path / "agent.log"
        process = _agent(
            tmp_path / "node",
            f"--ca-pin={joining['ca_pin']}",
            f"--auth-server={cluster.proxy}",
            "--insecure",
            log=log,
            env={"JUMPGATE_TOKEN": joining["token"]},
        )
        error = _refused(process, log, 0, joining["ca_pin"])
        assert "drop --insecure" in error, error
        assert not (tmp_path / "node" / "node" / "identity.json").exists()


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.parametrize("source", ["argument", "separate", "file", "environment"])
def test_the_running_agent_holds_the_token_in_neither_its_command_line_nor_its_environment(
    platform: tuple[Cluster, Shell], tmp_path: Path, source: str
) -> None:
    """``ps`` shows every user a process's arguments; its environment (/proc/PID/environ,
    the block it was started with: ``os.environ.pop`` does not erase it) shows its owner and
    root, for its whole life. The token reaches the agent through an inherited pipe."""
    cluster, admin = platform
    joining = _token(admin)
    token_file = tmp_path / "join-token"
    token_file.write_text(joining["token"] + "\n")
    token_file.chmod(0o600)
    argv, env = {
        "argument": ([f"--token={joining['token']}"], {}),
        "separate": (["--token", joining["token"]], {}),
        "file": ([f"--token={token_file}"], {}),
        "environment": ([], {"JUMPGATE_TOKEN": joining["token"]}),
    }[source]
    log = tmp_path / "agent.log"
    process = _agent(
        tmp_path / "node",
        *argv,
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server={cluster.proxy}",
        "--insecure",
        log=log,
        env=env,
    )
    try:
        wait_for_line(log, '"tunnel up"', process)
        command_line = _cmdline(process.pid)
        assert "--services=node" in command_line
        assert joining["token"] not in command_line, command_line
        environment = _environ(process.pid)
        assert b"PATH=" in environment
        assert joining["token"].encode() not in environment, "the token is in /proc/PID/environ"
    finally:
        _stop(process)


def test_an_unverifiable_certificate_at_the_first_join_is_one_line(
    platform: tuple[Cluster, Shell], tmp_path: Path
) -> None:
    """Without ``--insecure`` against the self-signed local platform, the join stops at once
    with one line saying what to pass, as every other join mistake does (not retry forever)."""
    cluster, admin = platform
    joining = _token(admin)
    log = tmp_path / "agent.log"
    process = _agent(
        tmp_path / "node",
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server={cluster.proxy}",
        log=log,
        env={"JUMPGATE_TOKEN": joining["token"]},
    )
    try:
        code = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        pytest.fail(f"the agent kept retrying: {log.read_text()[-2000:]}")
    text = log.read_text()
    assert code == 1, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("jumpgate: error:"), lines[0]
    assert "--insecure" in lines[0], lines[0]
    assert not (tmp_path / "node" / "node" / "identity.json").exists()


def test_an_unverifiable_certificate_after_the_join_is_logged_and_retried(
    platform: tuple[Cluster, Shell], tmp_path: Path
) -> None:
    """Once joined, a web certificate that does not verify may be a passing fault (a proxy
    restarted with another one): the agent logs it and keeps trying, trusting nothing."""
    cluster, admin = platform
    joining = _token(admin)
    node = tmp_path / "node"
    log = tmp_path / "agent.log"
    process = _agent(
        node,
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server={cluster.proxy}",
        "--insecure",
        log=log,
        env={"JUMPGATE_TOKEN": joining["token"]},
    )
    try:
        _joined_then_stopped(process, log)
        _edit_identity(node, insecure=False)  # as if the platform's certificate now had to verify
        offset = len(log.read_text())
        process = _agent(node, log=log)
        _logged_while_running(process, log, offset, "cannot verify the HTTPS certificate", 20)
        assert "Traceback" not in log.read_text()[offset:]
        assert '"tunnel up"' not in log.read_text()[offset:]
    finally:
        _stop(process)


def test_an_unreadable_token_pipe_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    process = _agent(tmp_path / "node", log=log, env={"JUMPGATE_TOKEN_FD": "987"})
    assert process.wait(30) == 1
    text = log.read_text().strip()
    assert text.startswith("jumpgate: error: token: cannot read the join token from descriptor 987")
    assert len(text.splitlines()) == 1, text


def test_an_unreadable_token_file_is_one_line(
    platform: tuple[Cluster, Shell], tmp_path: Path
) -> None:
    cluster, admin = platform
    joining = _token(admin)
    empty = tmp_path / "empty-token"
    empty.write_text("")
    log = tmp_path / "agent.log"
    process = _agent(
        tmp_path / "node",
        f"--token={empty}",
        f"--ca-pin={joining['ca_pin']}",
        f"--auth-server={cluster.proxy}",
        "--insecure",
        log=log,
    )
    assert process.wait(30) == 1
    assert log.read_text().strip() == (
        f"jumpgate: error: token: {empty} must hold the join token on one line"
    )

"""What every e2e test shares: a daemon on free loopback ports, and CLIs run like a person."""

import fcntl
import getpass
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh
import pyotp
import pytest

from jumpgate.protocol import calls
from jumpgate.protocol.client import Client
from tests.support import free_ports

PASSWORD = "correct horse battery staple"
STATIC_TOKEN = "static-node-token-from-config"
BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Administered(Protocol):
    """A site with a logged-in admin: all the CLI helpers need."""

    @property
    def admin(self) -> "Shell": ...


class Front(Protocol):
    """Where users reach a platform: its HTTPS and SSH ports on loopback."""

    port: int
    ssh_port: int


@dataclass
class Cluster:
    """A running ``jumpgate start`` (auth, proxy) with its ports and log."""

    directory: Path
    port: int
    ssh_port: int
    tunnel_port: int
    diag_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra_config: str = ""  # more YAML for jumpgate.yaml
    _started: bool = False  # ports are kept once the daemon has run on them

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "daemon.log"

    @property
    def proxy(self) -> str:
        return f"acme.localhost:{self.port}"

    def start(self) -> None:
        """Start the daemon; on its first start, ports another process took since they were
        picked (``free_ports`` can only say they were free a moment ago) are picked again."""
        for attempt in range(3):
            try:
                self._launch()
                self._started = True
                return
            except pytest.fail.Exception:
                log = self.log.read_text()
                taken = "address already in use" in log or " is in use: " in log
                if self._started or not taken or attempt == 2:
                    raise
                self.port, self.ssh_port, self.tunnel_port, diag = free_ports(4)
                if self.diag_port:
                    self.diag_port = diag

    def _launch(self) -> None:
        config = self.directory / "jumpgate.yaml"
        config.write_text(
            f"data_dir: {self.data_dir}\n"
            "web_listen_addr: 127.0.0.1:1\n"  # overridden by the flag below
            "static_tokens:\n"
            f"  - {{tenant: acme, token: {STATIC_TOKEN}, system_roles: [node]}}\n"
            + self.extra_config
        )
        offset = len(self.log.read_text()) if self.log.exists() else 0
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "jumpgate"),
                    "start",
                    "-c",
                    str(config),
                    "--web-listen-addr",
                    f"127.0.0.1:{self.port}",
                    "--ssh-listen-addr",
                    f"127.0.0.1:{self.ssh_port}",
                    "--tunnel-listen-addr",
                    f"127.0.0.1:{self.tunnel_port}",
                    "--diag-addr",
                    f"127.0.0.1:{self.diag_port}",
                ],
                stdout=out,
                stderr=out,
            )
        wait_for_line(self.log, "platform started", self.process, offset=offset)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=20)


def wait_for_line(
    log: Path, text: str, process: subprocess.Popen[bytes], *, offset: int = 0, seconds: float = 20
) -> float:
    """Wait until ``text`` appears in ``log`` after ``offset``; the seconds it took."""
    start = time.monotonic()
    while text not in log.read_text()[offset:]:
        if process.poll() is not None or time.monotonic() - start > seconds:
            pytest.fail(f"{text!r} did not appear: {log.read_text()[offset:][-3000:]}")
        time.sleep(0.05)
    return time.monotonic() - start


class Shell:
    """Runs jump/jumpctl/jumpgate with one JUMPGATE_HOME, like one person's laptop."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "JUMPGATE_HOME": str(home)}

    def run(self, *argv: str, stdin: str | None = None) -> Result:
        done = subprocess.run(
            [str(BIN / argv[0]), *argv[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *argv: str, stdin: str | None = None) -> Result:
        result = self.run(*argv, stdin=stdin)
        assert result.code == 0, f"{argv}: {result.err}"
        return result

    def fails(self, *argv: str, stdin: str | None = None) -> str:
        """The one-line error of a command that must fail."""
        result = self.run(*argv, stdin=stdin)
        assert result.code == 1, f"{argv} should fail: {result.out}"
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        assert "Traceback" not in result.err
        return lines[0]


@contextmanager
def running_cluster(directory: Path, extra_config: str = "") -> Iterator[Cluster]:
    """``jumpgate start`` in ``directory`` on free loopback ports, with ``extra_config`` (more
    YAML for jumpgate.yaml); stopped when the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    web, ssh, tunnel, diag = free_ports(4)
    running = Cluster(directory, web, ssh, tunnel, diag, extra_config=extra_config)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as running:
        yield running


def signup_and_login(
    shell: Shell, cluster: Front, token: str, user: str, *, tenant: str = "acme"
) -> str:
    """Sign up and log in; the one-time code the login spent (to try replaying it)."""
    proxy = f"{tenant}.localhost:{cluster.port}"
    signup = shell.ok(
        "jump",
        "signup",
        f"--proxy={proxy}",
        "--insecure",
        "--password-stdin",
        "--format",
        "json",
        token,
        stdin=PASSWORD + "\n",
    ).json()
    assert isinstance(signup, dict)
    code = pyotp.TOTP(signup["totp_secret"]).now()
    shell.ok(
        "jump",
        "login",
        f"--proxy={proxy}",
        "--insecure",
        "--user",
        user,
        "--password-stdin",
        "--otp",
        code,
        stdin=PASSWORD + "\n",
    )
    return code


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET from a diagnostics endpoint on loopback: (status, body)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def create_tenant(shell: Shell, cluster: Cluster, name: str, admin: str, *logins: str) -> Any:
    """``jumpgate tenants create`` on the cluster's data dir; its JSON answer."""
    argv = ["jumpgate", "tenants", "create", name, "--admin", admin, "--format", "json"]
    if logins:
        argv += ["--logins", ",".join(logins)]
    return shell.ok(*argv, "--data-dir", str(cluster.data_dir)).json()


LOGIN = getpass.getuser()


def join_command(joining: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The command ``jumpctl nodes add --format json`` says to run (this checkout's
    ``jumpgate``), and the environment it names (the token)."""
    argv = [str(BIN / "jumpgate"), *joining["argv"][1:]]
    return argv, dict(joining["env"])


@dataclass
class Node:
    """A node agent process joined to tenant acme."""

    directory: Path
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None  # more environment (the join token)

    @property
    def log(self) -> Path:
        return self.directory / "agent.log"

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        offset = len(self.log.read_text()) if self.log.exists() else 0
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                [*self.command, *extra],
                stdout=out,
                stderr=out,
                env={**os.environ, **(self.env or {})},
            )
        self.offset = offset
        return self.process

    def wait_tunnel(self, seconds: float = 20) -> float:
        assert self.process is not None
        return wait_for_line(
            self.log, '"tunnel up"', self.process, offset=self.offset, seconds=seconds
        )

    def restart(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start again from the stored identity: no token, no pin, no address."""
        self.command = [
            str(BIN / "jumpgate"),
            "start",
            "--services=node",
            "--data-dir",
            str(self.directory),
            "--insecure",
            *extra,
        ]
        return self.start()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=20)


@dataclass
class Site:
    """A cluster, a logged-in admin, one joined node, and an ssh_config to reach it."""

    cluster: Cluster
    admin: Shell
    node: Node
    ssh_config: Path

    def ssh(
        self, *argv: str, host: str = "web-1", stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), *argv[:-1], host, argv[-1]] if argv else [],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )


def openssh_sftp(site: Site, directory: Path, batch: str) -> subprocess.CompletedProcess[bytes]:
    """OpenSSH's ``sftp -b -`` running ``batch`` on web-1 with the ssh_config ``jump config``
    prints (written to ``directory``), as a user of plain OpenSSH would."""
    config = directory / "jump_config"
    config.write_text(site.admin.ok("jump", "config").out)
    return subprocess.run(
        ["sftp", "-F", str(config), "-b", "-", f"{LOGIN}@web-1.acme.localhost"],
        input=batch.encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def write_ssh_config(
    directory: Path, home: Path, cluster: Front, host_ca: str, proxy_key: str
) -> Path:
    """What ``jump config`` prints, written out: ProxyJump through the proxy, node via CA."""
    profile = home / "profiles" / f"acme.localhost_{cluster.port}"
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{cluster.ssh_port} {proxy_key}\n"
        f"@cert-authority web-1,nosuch,*.acme {host_ca}\n"
    )
    config = directory / "ssh_config"
    config.write_text(
        f"""Host jg-proxy
  HostName 127.0.0.1
  Port {cluster.ssh_port}
  User {LOGIN}
Host * !jg-proxy
  User {LOGIN}
  ProxyJump jg-proxy
Host *
  IdentityFile {profile / "key"}
  CertificateFile {profile / "key-cert.pub"}
  IdentitiesOnly yes
  UserKnownHostsFile {known_hosts}
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 10
"""
    )
    return config


@pytest.fixture
def site(cluster: Cluster, tmp_path: Path) -> Iterator[Site]:
    built = build_site(cluster, tmp_path)
    yield built
    _stop_node(built)


@contextmanager
def running_site(directory: Path, extra_config: str = "") -> Iterator[Site]:
    """``running_cluster`` with ``build_site`` on it (tenant acme, its admin, node web-1), for
    a test that needs the platform started with ``extra_config``; all stopped after."""
    with running_cluster(directory, extra_config) as running:
        built = build_site(running, directory)
        try:
            yield built
        finally:
            _stop_node(built)


def _stop_node(built: Site) -> None:
    if built.node.process is not None and built.node.process.poll() is None:
        built.node.kill(signal.SIGTERM)


def build_site(cluster: Cluster, tmp_path: Path, node_prefix: tuple[str, ...] = ()) -> Site:
    """Tenant acme on ``cluster`` with a logged-in admin and node web-1 joined (its agent's
    command run behind ``node_prefix``, e.g. in a mount namespace); if a step fails, the
    daemon's state and the end of its log say why (a CI run once saw ``jump signup`` refused
    by a daemon that had printed "platform started")."""
    try:
        return _build_site(cluster, tmp_path, node_prefix)
    except AssertionError as exc:
        exited = cluster.process.poll() if cluster.process is not None else "not started"
        log = cluster.log.read_text()[-4000:] if cluster.log.exists() else ""
        raise AssertionError(
            f"{exc}\n--- the daemon (exit {exited}); its log ends:\n{log}"
        ) from exc


def _build_site(cluster: Cluster, tmp_path: Path, node_prefix: tuple[str, ...]) -> Site:
    admin = Shell(tmp_path / "home")
    created = create_tenant(admin, cluster, "acme", "alice", LOGIN)
    signup_and_login(admin, cluster, created["invite_token"], "alice")
    joining = admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    command, env = join_command(joining)
    node = Node(
        node_dir,
        [
            *node_prefix,
            *command,
            *("--data-dir", str(node_dir), "--nodename", "web-1", "--labels", "env=prod"),
        ],
        env=env,
    )
    node.start()
    node.wait_tunnel()
    identity = json.loads((node_dir / "node" / "identity.json").read_text())

    with Client(cluster.proxy, insecure=True) as client:
        proxy_key = client.send(calls.ping()).proxy_host_keys[0]
    config = write_ssh_config(
        tmp_path, tmp_path / "home", cluster, identity["host_ca_keys"][0], proxy_key
    )
    return Site(cluster, admin, node, config)


def audit_events(
    site: Administered,
    event_type: str,
    count: int,
    seconds: float = 15,
    *,
    where: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """The cluster's ``event_type`` events (only those ``where`` is true of, if given) once
    there are ``count`` (proxies and nodes send theirs in the background, each on its own
    time: a node's event can be in while the proxy's of the same session is not), oldest
    first; fewer if ``seconds`` pass first."""
    argv = ["jumpctl", "audit", "search", "--type", event_type, "--order", "asc"]
    deadline = time.monotonic() + seconds
    while True:
        events = list(site.admin.ok(*argv, "--format", "json").json())
        if where is not None:
            events = [e for e in events if where(e)]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def pty_jump_ssh(site: Site) -> tuple["subprocess.Popen[bytes]", int, int]:
    """An interactive ``jump ssh web-1`` started on a new PTY: the process and the PTY's two
    ends (the caller's to close), so a test can type into it and inspect the terminal."""
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "jump"), "ssh", "web-1"],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**site.admin.env, "TERM": "xterm"},
        start_new_session=True,
    )
    return process, parent, child


def pty_session(
    site: Site, typed: bytes, *, resize: tuple[bytes, int, int] | None = None
) -> tuple[int, bytes]:
    """An interactive ``jump ssh web-1`` on a PTY: its exit status and what the terminal showed.
    With ``resize`` (a line, columns, rows), the window changes to that size once the session
    printed that line."""
    process, parent, child = pty_jump_ssh(site)
    os.close(child)
    os.write(parent, typed)
    seen = b""
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.2)
        if ready:
            try:
                seen += os.read(parent, 4096)
            except OSError:
                break
        if resize is not None and resize[0] + b"\r\n" in seen:
            _, columns, rows = resize
            fcntl.ioctl(parent, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.killpg(process.pid, signal.SIGWINCH)  # not its controlling terminal: say so
            resize = None
    status = process.wait(timeout=10)
    os.close(parent)
    return status, seen


def user_ssh_options(site: Site, username: str) -> dict[str, Any]:
    """asyncssh options of the site's logged-in admin (its key and certificate), for a
    connection to the proxy and, through it, to a node."""
    profile = next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())
    return {
        "username": username,
        "client_keys": [
            (
                asyncssh.read_private_key(profile / "key"),
                asyncssh.read_certificate(profile / "key-cert.pub"),
            )
        ],
        "known_hosts": None,
        "config": [],
        "agent_path": None,
    }


def as_the_node(site: Site) -> Any:
    """A connection to the proxy's tunnel port with the node's own key, as its agent makes."""
    identity = json.loads((site.node.directory / "node" / "identity.json").read_text())
    key = asyncssh.import_private_key((site.node.directory / "node" / "host_key").read_bytes())
    return asyncssh.connect(
        "127.0.0.1",
        site.cluster.tunnel_port,
        username=f"{identity['host_id']}.acme",
        client_keys=[key],
        known_hosts=None,
        config=[],
        agent_path=None,
    )

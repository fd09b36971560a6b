"""The two servers the sshd parity suite (``test_sshd_parity.py``) runs the same cases on.

* ``sshd``: Debian's ``/usr/sbin/sshd`` started as root on 127.0.0.1 with Debian's own
  ``sshd_config`` settings, trusting the tenant's user CA, so the certificate ``jump login``
  gave is what logs in, as it is on the node.
* ``jumpgate``: node web-1 behind the proxy, reached with the ssh_config ``jump config`` prints.

Each is a ``Target``: an ssh_config file and a destination, so ``ssh``, ``scp``, ``sftp``,
``rsync``, ``git`` and Ansible are all given the same ``-F CONFIG DEST`` and nothing else
differs between the two runs of a case.
"""

import contextlib
import http.server
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.protocol import calls, certs
from jumpgate.protocol.client import Client
from tests.e2e.conftest import LOGIN, Node, Site, join_command
from tests.support import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = Path("/usr/lib/openssh/sftp-server")

CLIENT_DEFAULTS = """
Host *
    BatchMode yes
    ConnectTimeout 10
    StrictHostKeyChecking yes
    LogLevel ERROR
    ServerAliveInterval 0
"""
"""Appended to both targets' ssh_config: no prompt, no chatter (``Connection to X closed.``
would name each target's own host), a failed connection fails fast."""


SHELL_STARTUP_NOISE = re.compile(
    rb"^(?:pyenv: cannot rehash: [^\n]*|rm: cannot remove '[^'\n]*/\.pyenv/shims/[^'\n]*': "
    rb"No such file or directory)\n",
    re.MULTILINE,
)
"""What this machine's root ``.bashrc`` (``eval "$(pyenv init -)"``, run by bash for a
command from either server, as sshd runs it) prints now and then when logins start at
once: pyenv's rehash racing itself. Not the server's: a CI run saw it from Debian's sshd."""


@dataclass(frozen=True)
class Ran:
    """What a client command did, as the suite compares it."""

    code: int
    out: bytes
    err: bytes

    def text(self) -> str:
        return f"exit {self.code}, stdout {self.out[-600:]!r}, stderr {self.err[-600:]!r}"


@dataclass
class Target:
    """A server reached with plain OpenSSH: ``ssh -F config destination``."""

    name: str  # the test id: sshd or jumpgate
    config: Path  # the ssh_config every client is given
    destination: str  # LOGIN@HOST as the clients are given it
    log: Path  # the server's log, shown when a case fails
    env: dict[str, str] = field(default_factory=dict)  # more environment for every client

    @property
    def ssh_command(self) -> str:
        """``ssh`` with this target's config, for rsync's ``-e`` and ``GIT_SSH_COMMAND``."""
        return f"ssh -F {self.config}"

    def remote(self, path: Path | str) -> str:
        """``DEST:PATH`` for scp, rsync and git."""
        return f"{self.destination}:{path}"

    def environment(self, more: Mapping[str, str] | None = None) -> dict[str, str]:
        """The clients' environment: no agent (only the ``-A`` case starts one), no locale
        to send unless a case sets one."""
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return {**env, **self.env, **(more or {})}

    def run(
        self,
        argv: list[str],
        *,
        stdin: bytes | Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        cwd: Path | None = None,
    ) -> Ran:
        """Run a client (``argv`` as given, the caller puts ``-F`` where that client wants
        it); a client still running after ``timeout`` seconds fails the case, naming it."""
        with contextlib.ExitStack() as stack:
            if isinstance(stdin, Path):
                source: Any = stack.enter_context(stdin.open("rb"))
                data = None
            else:
                source, data = (subprocess.DEVNULL if stdin is None else None), stdin
            try:
                done = subprocess.run(
                    argv,
                    stdin=source,
                    input=data,
                    capture_output=True,
                    env=self.environment(env),
                    timeout=timeout,
                    cwd=cwd,
                    check=False,
                )
            except subprocess.TimeoutExpired as expired:
                pytest.fail(
                    f"{self.name}: {argv[0]} still running after {timeout}s "
                    f"(stdout {expired.stdout!r:.300}, stderr {expired.stderr!r:.300})"
                )
        return Ran(done.returncode, done.stdout, done.stderr)

    def ssh(
        self,
        command: str,
        *options: str,
        stdin: bytes | Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> Ran:
        """``ssh -F CONFIG OPTIONS DEST COMMAND`` (stdin /dev/null unless given), without
        what this machine's login shell startup may print (``SHELL_STARTUP_NOISE``)."""
        argv = ["ssh", "-F", str(self.config), *options, self.destination, command]
        ran = self.run(argv, stdin=stdin, env=env, timeout=timeout)
        return Ran(ran.code, ran.out, SHELL_STARTUP_NOISE.sub(b"", ran.err))

    def popen(self, *options: str, command: str | None = None, **kwargs: Any) -> Any:
        """A long-running ``ssh`` (a forwarding), for the caller to stop."""
        argv = ["ssh", "-F", str(self.config), *options, self.destination]
        return subprocess.Popen(
            [*argv, *([command] if command is not None else [])],
            stdin=subprocess.DEVNULL,
            env=self.environment(kwargs.pop("env", None)),
            **kwargs,
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


def _write_key(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    path.write_bytes(certs.openssh_private(key))
    path.chmod(0o600)


def profile_of(site: Site) -> Path:
    """The logged-in admin's profile directory: its key and the certificate ``jump login``
    wrote (the one both targets accept)."""
    return next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())


def user_ca_keys(site: Site) -> list[str]:
    with Client(site.cluster.proxy, insecure=True) as client:
        return list(client.send(calls.ca()).user_ca_keys)


def sshd_config(directory: Path, port: int, subsystem: str) -> str:
    """Debian's ``/etc/ssh/sshd_config`` settings (UsePAM, AcceptEnv, Subsystem...) on a
    port of our own, trusting the tenant's user CA instead of authorized_keys."""
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {directory / 'host_key'}",
            f"PidFile {directory / 'sshd.pid'}",
            f"TrustedUserCAKeys {directory / 'user_ca.pub'}",
            "AuthorizedKeysFile none",
            "PasswordAuthentication no",
            # Debian's settings, as /etc/ssh/sshd_config has them:
            "KbdInteractiveAuthentication no",
            "UsePAM yes",
            "X11Forwarding yes",
            "PrintMotd no",
            "AcceptEnv LANG LC_*",
            f"Subsystem sftp {subsystem}",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"sshd exited: {log.read_text()}")
            time.sleep(0.05)
    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")


def hidden_sftp_server(argv: list[str]) -> list[str]:
    """``argv`` run in a mount namespace of its own where ``/usr/lib/openssh/sftp-server`` is
    /dev/null (the machine's own stays as it is): a server without Debian's sftp-server."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        f'mount --bind /dev/null {SFTP_SERVER} && exec "$@"',
        "sh",
        *argv,
    ]


@contextlib.contextmanager
def running_sshd(
    site: Site, directory: Path, *, without_sftp_server: bool = False
) -> Iterator[Target]:
    """Debian's sshd as root on a free loopback port, its own host key in the client's
    known_hosts; ``without_sftp_server``: in a namespace where sftp-server is hidden, serving
    SFTP with ``internal-sftp`` as an admin of such a machine would configure it."""
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH sshd is missing: run make system-deps (openssh-server)")
    directory.mkdir(parents=True, exist_ok=True)
    host_key = ed25519.Ed25519PrivateKey.generate()
    _write_key(directory / "host_key", host_key)
    (directory / "user_ca.pub").write_text("\n".join(user_ca_keys(site)) + "\n")
    port = free_port()
    subsystem = "internal-sftp" if without_sftp_server else str(SFTP_SERVER)
    config = directory / "sshd_config"
    config.write_text(sshd_config(directory, port, subsystem))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = directory / "sshd.log"
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    if without_sftp_server:
        argv = hidden_sftp_server(argv)
    with log.open("w") as out:
        # A variable of its own: a session that shows it got the server's environment.
        env = {**os.environ, "PARITY_SERVER_PROCESS": "1"}
        process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
    try:
        _wait_listening(port, process, log)
        known_hosts = directory / "known_hosts"
        public = certs.openssh_public(host_key.public_key())
        known_hosts.write_text(f"[127.0.0.1]:{port} {public}\n")
        profile = profile_of(site)
        client_config = directory / "ssh_config"
        client_config.write_text(
            f"""Host sshd-target
    HostName 127.0.0.1
    Port {port}
    IdentityFile {profile / "key"}
    CertificateFile {profile / "key-cert.pub"}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
{CLIENT_DEFAULTS}"""
        )
        yield Target("sshd", client_config, f"{LOGIN}@sshd-target", log)
    finally:
        process.terminate()
        process.wait(timeout=10)


def jumpgate_target(site: Site, directory: Path, nodename: str = "web-1") -> Target:
    """Node ``nodename`` through the proxy, with what ``jump config`` prints as the ssh_config
    (and the same client defaults as the sshd target)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"ssh_config-{nodename}"
    config.write_text(site.admin.ok("jump", "config").out + CLIENT_DEFAULTS)
    host = site.cluster.proxy.rsplit(":", 1)[0]
    log = site.node.log if nodename == "web-1" else directory / nodename / "agent.log"
    return Target("jumpgate", config, f"{LOGIN}@{nodename}.{host}", log)


@contextlib.contextmanager
def node_without_sftp_server(site: Site, directory: Path, nodename: str) -> Iterator[Target]:
    """A second node agent, joined as ``nodename``, in a namespace where Debian's sftp-server
    is hidden."""
    joining = site.admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    argv, env = join_command(joining)
    data = directory / nodename
    data.mkdir(parents=True)
    node = Node(
        data, hidden_sftp_server([*argv, "--data-dir", str(data), "--nodename", nodename]), env=env
    )
    node.start()
    try:
        node.wait_tunnel()
        yield jumpgate_target(site, directory, nodename)
    finally:
        if node.process is not None and node.process.poll() is None:
            node.kill(15)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on the test's stderr."""


@contextlib.contextmanager
def http_server(directory: Path) -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1 serving ``directory``; its port."""
    handler = partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def ssh_agent(directory: Path) -> Iterator[tuple[str, str]]:
    """An ssh-agent holding one new key: its socket and what ``ssh-add -l`` says of it here."""
    socket_path = Path(tempfile.mkdtemp(prefix="jg-agent-")) / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert agent.poll() is None, "ssh-agent exited"
            assert time.monotonic() < deadline, "ssh-agent made no socket"
            time.sleep(0.05)
        key = directory / "agent_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "parity", "-f", str(key)],
            check=True,
        )
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", "-q", str(key)], env=env, check=True, capture_output=True)
        listed = subprocess.run(
            ["ssh-add", "-l"], env=env, check=True, capture_output=True, text=True
        )
        yield str(socket_path), listed.stdout
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(socket_path.parent, ignore_errors=True)


def curl(*argv: str, until: float = 15.0) -> subprocess.CompletedProcess[bytes]:
    """``curl -sS`` once it could connect (exit 7 is retried until ``until`` seconds pass: a
    forwarding's listener comes up after the login); any other answer is returned as is."""
    deadline = time.monotonic() + until
    while True:
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "10", *argv], capture_output=True, timeout=30, check=False
        )
        if done.returncode != 7 or time.monotonic() > deadline:
            return done
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> bytes:
    """Stop a long-running client; what it printed on stderr (if it was piped)."""
    if process.poll() is None:
        process.terminate()
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
    return err or b""

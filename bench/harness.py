"""A running platform, a logged-in user, a joined node and OpenSSH daemons, for benchmarks.

Everything runs on 127.0.0.1 as real processes: ``jumpgate start`` (platform), ``jumpgate
start --services=node`` (agent), and two Debian ``sshd``s (a node and a jump host) trusting the
same tenant user CA, so Jumpgate and OpenSSH are measured with the same client and certificate.
"""

import getpass
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pyotp
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.users import BCRYPT_ROUNDS
from jumpgate.protocol import calls, certs, models
from jumpgate.protocol.client import Client, Credentials

BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"
LOGIN = getpass.getuser()
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def p50_p95(samples: list[float]) -> tuple[float, float]:
    """The median and the 95th percentile (nearest rank) of ``samples``."""
    return statistics.median(samples), sorted(samples)[int(len(samples) * 0.95) - 1]


def bcrypt_checks(count: int) -> list[float]:
    """Milliseconds of ``count`` ``bcrypt.checkpw`` at the platform's cost: a login's floor."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS))
    took = []
    for _ in range(count):
        began = time.perf_counter()
        bcrypt.checkpw(PASSWORD.encode(), hashed)
        took.append((time.perf_counter() - began) * 1000)
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in (path.read_text() if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not seen in {path}: {path.read_text()[-2000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate and reap a process."""
    process.terminate()
    process.wait(timeout=30)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (``VmRSS`` in /proc/PID/status; a zombie has none)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Bench:
    """Paths and ports of the running setup."""

    directory: Path
    platform_pid: int
    proxy_ssh_port: int
    tunnel_port: int
    web_port: int
    jumpgate_ssh_config: Path
    openssh_ssh_config: Path
    client: Client


def _write_key(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    path.write_bytes(certs.openssh_private(key))
    path.chmod(0o600)


def _sshd(stack: ExitStack, directory: Path, name: str, port: int, user_ca: Path) -> None:
    host_key = directory / f"{name}_host_key"
    _write_key(host_key, ed25519.Ed25519PrivateKey.generate())
    config = directory / f"{name}_sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {directory / name}.pid\n"
        f"TrustedUserCAKeys {user_ca}\nAuthorizedKeysFile none\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSetEnv SHLVL=1\n"
        "AllowTcpForwarding yes\nLogLevel ERROR\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    stack.callback(stop, process)
    wait_port(port)


@contextmanager
def running(*, agent: bool = True, openssh: bool = True) -> Iterator[Bench]:
    """``start`` in a temporary directory: everything stopped, then removed, when the block
    ends."""
    with tempfile.TemporaryDirectory() as directory, ExitStack() as stack:
        yield start(stack, Path(directory), agent=agent, openssh=openssh)


def start(stack: ExitStack, directory: Path, *, agent: bool = True, openssh: bool = True) -> Bench:
    """Start everything; ``stack`` stops it all."""
    web, ssh, tunnel = free_port(), free_port(), free_port()
    data = directory / "data"
    log = directory / "platform.log"
    with log.open("w") as out:
        platform = subprocess.Popen(
            [
                str(BIN / "jumpgate"),
                "start",
                "--data-dir",
                str(data),
                "--web-listen-addr",
                f"127.0.0.1:{web}",
                "--ssh-listen-addr",
                f"127.0.0.1:{ssh}",
                "--tunnel-listen-addr",
                f"127.0.0.1:{tunnel}",
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=out,
        )
    stack.callback(stop, platform)
    wait_port(web)
    created = json.loads(
        subprocess.run(
            [
                str(BIN / "jumpgate"),
                "tenants",
                "create",
                "bench",
                "--admin",
                "alice",
                "--logins",
                LOGIN,
                "--format",
                "json",
                "--data-dir",
                str(data),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    proxy = f"bench.localhost:{web}"
    anonymous = Client(proxy, insecure=True)
    signup = models.SignupRequest(token=created["invite_token"], password=PASSWORD)
    secret = anonymous.send(calls.signup(signup)).totp_secret
    key = ed25519.Ed25519PrivateKey.generate()
    request = models.LoginRequest(
        user="alice",
        password=PASSWORD,
        otp=pyotp.TOTP(secret).now(),
        public_key=certs.openssh_public(key.public_key()),
    )
    login = anonymous.send(calls.login(request))
    _write_key(directory / "key", key)
    (directory / "key-cert.pub").write_text(login.certificate + "\n")
    (directory / "user_ca.pub").write_text(login.ca.user_ca_keys[0] + "\n")
    client = Client(proxy, insecure=True, credentials=Credentials(login.certificate, key))
    if agent:
        token = client.send(calls.add_token(models.TokenCreateRequest(ttl_seconds=600)))
        agent_log = directory / "agent.log"
        with agent_log.open("w") as out:
            node = subprocess.Popen(
                [
                    str(BIN / "jumpgate"),
                    "start",
                    "--services=node",
                    f"--token={token.token}",
                    f"--ca-pin={token.ca_pin}",
                    f"--auth-server={proxy}",
                    "--insecure",
                    "--data-dir",
                    str(directory / "node"),
                    "--nodename",
                    "web-1",
                ],
                stdout=out,
                stderr=out,
            )
        stack.callback(stop, node)
        wait_for(agent_log, '"tunnel up"', node)
    node_port, jump_port = free_port(), free_port()
    if openssh:
        _sshd(stack, directory, "node", node_port, directory / "user_ca.pub")
        _sshd(stack, directory, "jumphost", jump_port, directory / "user_ca.pub")
    common = (
        f"  User {LOGIN}\n  IdentityFile {directory / 'key'}\n"
        f"  CertificateFile {directory / 'key-cert.pub'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n  BatchMode yes\n"
    )
    jumpgate_config = directory / "jumpgate_ssh_config"
    jumpgate_config.write_text(
        f"Host jg-proxy\n  HostName 127.0.0.1\n  Port {ssh}\n{common}"
        f"Host web-1\n  ProxyJump jg-proxy\n{common}"
    )
    openssh_config = directory / "openssh_ssh_config"
    openssh_config.write_text(
        f"Host jumphost\n  HostName 127.0.0.1\n  Port {jump_port}\n{common}"
        f"Host node\n  HostName 127.0.0.1\n  Port {node_port}\n  ProxyJump jumphost\n{common}"
    )
    return Bench(directory, platform.pid, ssh, tunnel, web, jumpgate_config, openssh_config, client)


def jump_home(bench: Bench) -> dict[str, str]:
    """A ``jump login`` profile for a second user (bob): the environment to run ``jump`` in."""
    request = models.UserCreateRequest(name="bob", logins=[LOGIN], roles=[models.Role.ACCESS])
    invite = bench.client.send(calls.add_user(request))
    env = {**os.environ, "JUMPGATE_HOME": str(bench.directory / "bob")}
    proxy = f"bench.localhost:{bench.web_port}"

    def jump(*argv: str) -> str:
        return subprocess.run(
            [str(BIN / "jump"), *argv, f"--proxy={proxy}", "--insecure", "--password-stdin"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        ).stdout

    signup = json.loads(jump("signup", "--format", "json", invite.invite_token))
    jump("login", "--user", "bob", "--otp", pyotp.TOTP(signup["totp_secret"]).now())
    return env

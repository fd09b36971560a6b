"""Port and agent forwarding on the node's SSH server, as OpenSSH's client asks for them.

A ``NodeServer`` (the node's server, as the agent runs it) listens on 127.0.0.1 in a thread of
its own; the user is Debian's ``ssh`` with a certificate from a user CA made here, with or
without ``permit-port-forwarding`` and ``permit-agent-forwarding``.
"""

import asyncio
import getpass
import http.server
import os
import pwd
import socket
import socketserver
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.sshcert import CertType, Signer
from jumpgate.node_agent.audit_budget import Budget, Budgets
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.server import NodeServer
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from tests.support import free_port

pytestmark = pytest.mark.net
LOGIN = getpass.getuser()
SECONDS = 20.0
PORTS, AGENT = certs.PERMIT_PORT_FORWARDING, certs.PERMIT_AGENT_FORWARDING


@dataclass
class Events:
    """The node's audit sink: what it was given, in order."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def put(self, item: dict[str, Any], /) -> object:
        self.items.append(item)
        return True

    def of(self, kind: str, seconds: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not [e for e in self.items if e["type"] == kind]:
            time.sleep(0.05)
        return [e for e in self.items if e["type"] == kind]


@dataclass
class Node:
    port: int
    ca: ed25519.Ed25519PrivateKey
    events: Events
    directory: Path

    def certificate(self, name: str, *permits: str, login: str = LOGIN) -> Path:
        """A key and a certificate for ``LOGIN`` with ``permits`` (extension names), on disk
        for ``ssh -i``; the path of the key."""
        key = ed25519.Ed25519PrivateKey.generate()
        now = int(time.time())
        cert = Signer(self.ca).certify(
            key.public_key(),
            cert_type=CertType.USER,
            key_id="alice@acme",
            principals=[login],
            valid_after=now - 60,
            valid_before=now + 3600,
            extensions={certs.EXT_USER: "alice", **dict.fromkeys(permits, "")},
        )
        path = self.directory / name
        path.write_bytes(certs.openssh_private(key))
        path.chmod(0o600)
        Path(str(path) + "-cert.pub").write_text(cert + "\n")
        return path

    def ssh(
        self, key: Path, *options: str, command: str | None = None, login: str = LOGIN
    ) -> list[str]:
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=INFO",
            "-o",
            "ExitOnForwardFailure=yes",
            "-p",
            str(self.port),
            *options,
            f"{login}@127.0.0.1",
            *([command] if command is not None else []),
        ]


def _serve(ready: "list[Any]", stop: threading.Event, make: Any) -> None:
    async def main() -> None:
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=make,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            encoding=None,
        )
        ready.append(server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def running_node(tmp_path: Path, **server: Any) -> Iterator[Node]:
    ca = ed25519.Ed25519PrivateKey.generate()
    events = Events()
    ca_line = certs.openssh_public(ca.public_key())

    def make() -> NodeServer:
        uploads = Uploader(Spool(tmp_path / "recordings"), events)
        return NodeServer([ca_line], events, uploads, **server)

    ready: list[Any] = []
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(ready, stop, make), daemon=True)
    thread.start()
    deadline = time.monotonic() + SECONDS
    while not ready and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready, "the node server did not start"
    try:
        yield Node(ready[0], ca, events, tmp_path)
    finally:
        stop.set()
        thread.join(SECONDS)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    yield from running_node(tmp_path)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    """A tiny HTTP server on 127.0.0.1: its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def fetch(port: int, path: str = "/x", *, host: str = "127.0.0.1") -> str:
    """GET ``path`` from ``host:port`` with a raw socket; the body ("" if the connection was
    closed or reset with no answer: a forward refused)."""
    answer = b""
    with socket.create_connection((host, port), timeout=10) as conn:
        try:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            while chunk := conn.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer.partition(b"\r\n\r\n")[2].decode()


def unix_fetch(path: Path, url: str = "/x") -> str:
    """GET ``url`` from an HTTP server on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(f"GET {url} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.partition(b"\r\n\r\n")[2].decode()


class _UnixHello(_Hello):
    def address_string(self) -> str:
        return "unix"


@pytest.fixture
def unix_web(tmp_path: Path) -> Iterator[Path]:
    """The tiny HTTP server on a Unix socket in a directory only root may enter."""
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    path = directory / "web.sock"
    server = socketserver.ThreadingUnixStreamServer(str(path), _UnixHello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def socks5_fetch(proxy: int, port: int, path: str = "/x") -> str:
    """GET through a SOCKS5 proxy on 127.0.0.1:``proxy`` (hostname given to the proxy)."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=10) as conn:
        conn.sendall(b"\x05\x01\x00")
        assert conn.recv(2) == b"\x05\x00"
        name = b"localhost"
        conn.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        reply = conn.recv(10)
        assert reply[:2] == b"\x05\x00", reply
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.partition(b"\r\n\r\n")[2].decode()


def listening(port: int) -> set[str]:
    """The addresses something listens on TCP ``port`` at (``/proc/net/tcp`` and ``tcp6``,
    as ``ss -ltn`` reads them: no probe connection, which would itself be forwarded)."""
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                shown = socket.inet_ntop(family, packed)
                found.add(f"[{shown}]:{port}" if family == socket.AF_INET6 else f"{shown}:{port}")
    return found


def wait_listening(port: int, seconds: float = SECONDS) -> None:
    """Wait until something listens on TCP ``port``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on port {port}")


class Background:
    """``ssh -N`` with forwards, stopped when the block ends."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.err = b""  # what ssh printed, once it ended

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.err = self.process.communicate(timeout=SECONDS)[1]
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.err = self.process.communicate()[1]


def test_local_forwarding_fetches_through_the_node_and_is_audited(node: Node, web: int) -> None:
    key = node.certificate("key", PORTS)
    local = free_port()
    with Background(node.ssh(key, "-N", "-L", f"{local}:127.0.0.1:{web}")):
        wait_listening(local)
        assert fetch(local, "/through-L") == "hello from /through-L"
    [event] = node.events.of("port")
    fields = event["fields"]
    assert event["outcome"] == "I"
    assert (fields["forward"], fields["addr"]) == ("local", f"127.0.0.1:{web}")
    assert (fields["user"], fields["login"]) == ("alice", LOGIN)
    assert fields["connection_id"]


def test_dynamic_forwarding_is_a_socks_proxy_through_the_node(node: Node, web: int) -> None:
    key = node.certificate("key", PORTS)
    local = free_port()
    with Background(node.ssh(key, "-N", "-D", f"127.0.0.1:{local}")):
        wait_listening(local)
        assert socks5_fetch(local, web, "/through-D") == "hello from /through-D"
    [event] = node.events.of("port")
    assert event["fields"]["addr"] == f"localhost:{web}"


def test_remote_forwarding_listens_on_the_nodes_loopback(node: Node, web: int) -> None:
    key = node.certificate("key", PORTS)
    remote = free_port()
    # Asked for every address: a node binds its loopback only, as sshd's GatewayPorts no
    with Background(node.ssh(key, "-N", "-R", f"0.0.0.0:{remote}:127.0.0.1:{web}")):
        wait_listening(remote)
        assert fetch(remote, "/through-R") == "hello from /through-R"
        bound = listening(remote)
        assert f"127.0.0.1:{remote}" in bound
        assert bound <= {f"127.0.0.1:{remote}", f"[::1]:{remote}"}
    listened, accepted = node.events.of("port")[:2]
    assert (listened["fields"]["forward"], listened["fields"]["action"]) == ("remote", "listen")
    assert listened["fields"]["addr"] == f"127.0.0.1:{remote}"
    assert accepted["fields"]["action"] == "accept"


def test_forwarding_is_refused_without_permit_port_forwarding(node: Node, web: int) -> None:
    key = node.certificate("key", AGENT)
    local = free_port()
    with Background(node.ssh(key, "-N", "-L", f"{local}:127.0.0.1:{web}")) as ssh:
        wait_listening(local)  # the client listens; the node refuses each channel
        assert fetch(local) == ""
    assert b"administratively prohibited" in ssh.err
    remote = free_port()
    refused = subprocess.run(
        node.ssh(key, "-N", "-R", f"{remote}:127.0.0.1:{web}"),
        capture_output=True,
        timeout=SECONDS,
        check=False,
    )
    assert refused.returncode == 255
    assert b"remote port forwarding failed" in refused.stderr
    assert not node.events.of("port", seconds=0.5)


def test_a_login_that_is_not_root_cannot_listen_below_1024(tmp_path: Path) -> None:
    from jumpgate.node_agent.forwarding import privileged_refusal

    assert privileged_refusal(22, uid=1000) is not None
    assert "22" in str(privileged_refusal(22, uid=1000))
    assert privileged_refusal(22, uid=0) is None
    assert privileged_refusal(0, uid=1000) is None  # any free port
    assert privileged_refusal(8080, uid=1000) is None


def test_forwarded_connections_on_one_connection_are_capped(tmp_path: Path, web: int) -> None:
    for node in running_node(tmp_path, max_forwards=2):
        key = node.certificate("key", PORTS)
        local = free_port()
        with Background(node.ssh(key, "-N", "-L", f"{local}:127.0.0.1:{web}")) as ssh:
            wait_listening(local)
            held = [socket.create_connection(("127.0.0.1", local)) for _ in range(2)]
            time.sleep(0.5)  # both channels open on the node
            assert fetch(local) == ""
            for conn in held:
                conn.close()
            time.sleep(0.5)
            assert fetch(local, "/again") == "hello from /again"
        assert b"too many forwarded connections" in ssh.err


def test_a_flood_of_forwards_stops_at_the_audit_budget(tmp_path: Path, web: int) -> None:
    tight = Budgets(session=Budget(events_per_second=1, events_burst=5), user=Budget())
    for node in running_node(tmp_path, budgets=tight):
        key = node.certificate("key", PORTS)
        local = free_port()
        with Background(node.ssh(key, "-N", "-L", f"{local}:127.0.0.1:{web}")):
            wait_listening(local)
            answers = [fetch(local) for _ in range(12)]
        assert answers[:5] == ["hello from /x"] * 5
        assert "" in answers  # refused once over its budget
        ports = node.events.of("port")
        assert 5 <= len(ports) <= 7
        [over] = node.events.of("session.over_budget")
        assert over["fields"]["connection_id"] == ports[0]["fields"]["connection_id"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A running ``ssh-agent`` holding one key: the environment that reaches it."""
    started = subprocess.run(
        ["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(started.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    env = {**os.environ, "SSH_AUTH_SOCK": str(tmp_path / "agent.sock")}
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "forwarded-key", "-f", "k"],
        cwd=tmp_path,
        check=True,
    )
    subprocess.run(["ssh-add", "-q", str(tmp_path / "k")], env=env, check=True)
    yield env
    os.kill(pid, 15)


def test_agent_forwarding_gives_the_session_an_agent_of_the_login(
    node: Node, agent: dict[str, str]
) -> None:
    key = node.certificate("key", AGENT)
    script = 'ls -ld "$(dirname "$SSH_AUTH_SOCK")"; stat -c "%U %F" "$SSH_AUTH_SOCK"; ssh-add -l'
    done = subprocess.run(
        node.ssh(key, "-A", command=script),
        capture_output=True,
        text=True,
        env=agent,
        timeout=SECONDS,
    )
    assert done.returncode == 0, done.stderr
    directory, sock, listed = done.stdout.splitlines()
    assert directory.startswith("drwx------")
    assert directory.split()[2] == LOGIN
    assert sock == f"{LOGIN} socket"
    assert "forwarded-key" in listed
    socket_path = subprocess.run(
        node.ssh(key, "-A", command="echo $SSH_AUTH_SOCK"),
        capture_output=True,
        text=True,
        env=agent,
    ).stdout.strip()
    assert socket_path
    deadline = time.monotonic() + 5  # removed as the node sees the connection closed
    while os.path.exists(os.path.dirname(socket_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(os.path.dirname(socket_path))


def test_agent_forwarding_is_refused_without_permit_agent_forwarding(
    node: Node, agent: dict[str, str]
) -> None:
    key = node.certificate("key", PORTS)
    done = subprocess.run(
        node.ssh(key, "-A", command='echo "[$SSH_AUTH_SOCK]"; ssh-add -l'),
        capture_output=True,
        text=True,
        env=agent,
        timeout=SECONDS,
    )
    assert done.stdout.splitlines()[0] == "[]"
    assert done.returncode != 0  # ssh-add finds no agent


def test_the_agent_directory_belongs_to_the_login(tmp_path: Path) -> None:
    """As root, the socket and its 0700 directory are chowned to a login that is not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the socket to another user")
    from jumpgate.node_agent.agent_forwarding import AgentSocket

    async def case() -> tuple[os.stat_result, os.stat_result, bool]:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        made = await AgentSocket.open(relay, uid=65534, gid=65534)
        try:
            return os.stat(os.path.dirname(made.path)), os.stat(made.path), True
        finally:
            made.close()
            assert not os.path.exists(os.path.dirname(made.path))

    directory, sock, _ = asyncio.run(case())
    assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (65534, 0o700)
    assert (sock.st_uid, stat.S_ISSOCK(sock.st_mode)) == (65534, True)


def test_unix_sockets_are_forwarded_both_ways(
    node: Node, web: int, unix_web: Path, tmp_path: Path
) -> None:
    key = node.certificate("key", PORTS)
    local, remote = free_port(), tmp_path / "remote.sock"
    forwards = ["-L", f"{local}:{unix_web}", "-R", f"{remote}:127.0.0.1:{web}"]
    with Background(node.ssh(key, "-N", *forwards)):
        wait_listening(local)
        assert fetch(local, "/to-unix") == "hello from /to-unix"
        deadline = time.monotonic() + SECONDS
        while not remote.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat.S_IMODE(remote.stat().st_mode) == 0o600  # sshd's StreamLocalBindMask
        assert unix_fetch(remote, "/from-unix") == "hello from /from-unix"
    seen = {(e["fields"]["forward"], e["fields"]["addr"]) for e in node.events.of("port")}
    assert {("local", str(unix_web)), ("remote", str(remote))} <= seen


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to serve another login")
def test_unix_sockets_are_connected_and_bound_as_the_login(
    node: Node, unix_web: Path, web: int, tmp_path: Path
) -> None:
    """A login that is not root reaches no socket it could not itself (root's 0700
    directory), and the socket it binds is its own."""
    key = node.certificate("key", PORTS, login="nobody")
    shared = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own is root's alone
    shared.chmod(0o1777)
    local, remote = free_port(), shared / "nobody.sock"
    forwards = ["-L", f"{local}:{unix_web}", "-R", f"{remote}:127.0.0.1:{web}"]
    with Background(node.ssh(key, "-N", *forwards, login="nobody")):
        wait_listening(local)
        assert fetch(local) == ""  # refused: nobody may not enter root's directory
        deadline = time.monotonic() + SECONDS
        while not remote.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert remote.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    remote.unlink()
    shared.rmdir()
    [refused] = [e for e in node.events.of("port") if e["outcome"] == "E"]
    assert "Permission denied" in refused["fields"]["error"]


def test_remote_forwarding_of_port_0_gets_a_port_the_node_picked(node: Node, web: int) -> None:
    key = node.certificate("key", PORTS)
    with Background(node.ssh(key, "-N", "-R", f"0:127.0.0.1:{web}")) as ssh:
        assert ssh.process.stderr is not None
        said = b""
        deadline = time.monotonic() + SECONDS
        while b"Allocated port" not in said and time.monotonic() < deadline:
            said += ssh.process.stderr.readline()
        port = int(said.split(b"Allocated port ")[1].split()[0])
        assert fetch(port, "/picked") == "hello from /picked"
    [listened] = [e for e in node.events.of("port") if e["fields"]["action"] == "listen"]
    assert listened["fields"]["addr"] == f"127.0.0.1:{port}"
    assert listened["fields"]["requested"] == "localhost:0"

"""The node decides again: roles at login, locks and expiry on every channel, and a pushed
lock, an idle timeout or an expired certificate ends what is open (issue 17, decision 0034).

A ``NodeServer`` listens on 127.0.0.1 as the agent runs it, with the agent's ``NodePolicy``
fed by a real ``ControlClient`` over a real control channel to a stand-in for the proxy's
end: it speaks the typed messages (``Welcome``, ``RolesAnswer`` to ``RolesRequest``,
``PolicyUpdate`` pushed), nothing more. The user is Debian's OpenSSH client, most often as
a ControlMaster connection (``ssh -M -S sock -fN``) that then runs commands
(``ssh -S sock host cmd``): the attack the issue reports.
"""

import asyncio
import getpass
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.sshcert import CertType, Signer
from jumpgate.node_agent.policy_cache import NodeFacts, NodePolicy
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.server import NodeServer
from jumpgate.node_agent.tunnel_control import ControlClient
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from jumpgate.protocol.resources import (
    Conditions,
    Lock,
    LockSpec,
    LockTarget,
    Metadata,
    Role,
    RoleOptions,
    RoleSpec,
)
from jumpgate.protocol.tunnel_messages import (
    Hello,
    PolicyUpdate,
    RolesAnswer,
    RolesRequest,
    Welcome,
    decode,
    encode,
)
from tests.net.test_forwarding import Events, fetch, web
from tests.support import free_port, open_ssh_server

pytestmark = pytest.mark.net
LOGIN = getpass.getuser()
SECONDS = 20.0
HOST_ID = "6f1c1c9e-0000-4000-8000-000000000001"
NODENAME = "web-1"
LOCK_SECONDS = 5.0  # the bound: a lock ends what it matches within 5 s
__all__ = ["web"]  # a fixture: a tiny HTTP server on 127.0.0.1


def role(name: str, labels: dict[str, str] | None = None, **options: Any) -> Role:
    """A role allowing the user's logins on nodes with ``labels`` (every node by default)."""
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            allow=Conditions(logins=["{{internal.logins}}"], node_labels=labels or {"*": "*"}),
            options=RoleOptions.model_validate(options),
        ),
    )


def lock(**target: str) -> Lock:
    return Lock(
        metadata=Metadata(name=f"lock-{len(target)}-{time.monotonic_ns()}"),
        spec=LockSpec(target=LockTarget(**target), message="incident 42"),
    )


@dataclass
class ProxyEnd:
    """The proxy's end of the control channel, as its messages look on the wire."""

    roles: dict[str, Role] = field(default_factory=dict)
    channels: list[Any] = field(default_factory=list)
    asked: list[list[str]] = field(default_factory=list)
    delay: float = 0.0  # before each answer to a ``RolesRequest``: a proxy far away

    async def serve(self, process: Any) -> None:
        self.channels.append(process)
        async for line in process.stdin:
            message = decode(line)
            if isinstance(message, Hello):
                process.stdout.write(encode(Welcome(version=max(message.versions))))
                process.stdout.write(encode(PolicyUpdate(roles_revision="r1")))
            elif isinstance(message, RolesRequest):
                self.asked.append(list(message.names))
                await asyncio.sleep(self.delay)
                found = [self.roles[n] for n in message.names if n in self.roles]
                process.stdout.write(encode(RolesAnswer(id=message.id, roles=found)))

    def push(self, update: PolicyUpdate) -> None:
        for process in self.channels:
            process.stdout.write(encode(update))


@dataclass
class Node:
    port: int
    ca: ed25519.Ed25519PrivateKey
    events: Events
    directory: Path
    proxy: ProxyEnd
    policy: NodePolicy
    loop: asyncio.AbstractEventLoop

    def push(self, *locks: Lock, revision: str = "r1") -> None:
        """Push a policy as the proxy does, and wait until the node has taken it."""
        update = PolicyUpdate(locks=list(locks), roles_revision=revision)
        self.loop.call_soon_threadsafe(self.proxy.push, update)
        deadline = time.monotonic() + SECONDS
        while self.policy.locks != list(locks) or self.policy.revision != revision:
            assert time.monotonic() < deadline, "the node did not take the pushed policy"
            time.sleep(0.01)

    def certificate(
        self,
        name: str,
        roles: tuple[str, ...] = ("access",),
        *,
        seconds: int = 3600,
        user: str = "alice",
        user_id: str = "u-alice",
    ) -> Path:
        """A key and a certificate as the platform issues them since 0034; the key's path."""
        key = ed25519.Ed25519PrivateKey.generate()
        now = int(time.time())
        cert = Signer(self.ca).certify(
            key.public_key(),
            cert_type=CertType.USER,
            key_id=f"{user}@acme",
            principals=[LOGIN],
            valid_after=now - 60,
            valid_before=now + seconds,
            extensions={
                certs.EXT_USER: user,
                certs.EXT_USER_ID: user_id,
                certs.EXT_ROLES: ",".join(roles),
                certs.EXT_TRAITS: json.dumps({"logins": [LOGIN]}),
                certs.EXT_VALID_BEFORE: str(now + seconds),
                certs.PERMIT_PTY: "",
                certs.PERMIT_PORT_FORWARDING: "",
            },
        )
        path = self.directory / name
        path.write_bytes(certs.openssh_private(key))
        path.chmod(0o600)
        Path(f"{path}-cert.pub").write_text(cert + "\n")
        return path

    def ssh(self, key: Path, *options: str) -> list[str]:
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
            "-p",
            str(self.port),
            *options,
            f"{LOGIN}@127.0.0.1",
        ]


def _serve(ready: "Future[Node]", stop: threading.Event, tmp_path: Path) -> None:
    async def main() -> None:
        proxy = ProxyEnd(roles={"access": role("access")})
        control_server, control_port = await open_ssh_server(proxy.serve)
        control_conn = await asyncssh.connect(
            "127.0.0.1", control_port, known_hosts=None, config=[], agent_path=None
        )
        policy = NodePolicy()
        control = await ControlClient.open(control_conn, "0" * 32)
        policy.connected(control.roles)

        async def no_trust(_: object) -> None:
            return None

        reading = asyncio.create_task(control.run(no_trust, policy.update))
        ca = ed25519.Ed25519PrivateKey.generate()
        events = Events()
        facts = NodeFacts(HOST_ID, NODENAME, {"env": "prod"})
        ca_line = certs.openssh_public(ca.public_key())
        uploads = Uploader(Spool(tmp_path / "recordings"), events)
        made: list[NodeServer] = []

        def make() -> NodeServer:
            made.append(NodeServer([ca_line], events, uploads, policy=policy, node=facts))
            return made[-1]

        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_factory=make,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            encoding=None,
        )
        port = server.sockets[0].getsockname()[1]
        while policy.revision is None:  # the first push, as a proxy sends it at once
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        ready.set_result(Node(port, ca, events, tmp_path, proxy, policy, loop))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        for each in made:  # what a client left open ends with the node
            if each.connection is not None:
                each.connection.close()
                await each.connection.wait_closed()
        reading.cancel()
        control_conn.close()
        await control_conn.wait_closed()
        control_server.close()
        await control_server.wait_closed()

    try:
        asyncio.run(main())
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    ready: Future[Node] = Future()
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(ready, stop, tmp_path), daemon=True)
    thread.start()
    try:
        yield ready.result(SECONDS)
    finally:
        stop.set()
        thread.join(SECONDS)


@pytest.fixture
def control_dir() -> Iterator[Path]:
    """A short directory for ControlMaster sockets (a unix socket's path is short)."""
    short = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    yield short
    for sock in short.iterdir():  # a master the test left up stops before the node does
        _run(["ssh", "-F", "/dev/null", "-S", str(sock), "-O", "exit", "127.0.0.1"], timeout=5)
    shutil.rmtree(short, ignore_errors=True)


def _run(argv: list[str], timeout: float = SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def _master(node: Node, key: Path, sock: Path) -> None:
    started = _run(node.ssh(key, "-M", "-S", str(sock), "-fN", "-o", "ControlPersist=no"))
    assert started.returncode == 0, started.stderr
    assert _run(node.ssh(key, "-S", str(sock), "-O", "check")).returncode == 0


def _alive(node: Node, key: Path, sock: Path) -> bool:
    return _run(node.ssh(key, "-S", str(sock), "-O", "check"), timeout=5).returncode == 0


LOCKS = [
    ({"user": "alice"}, True),
    ({"user_id": "u-alice"}, True),  # how a removed user is stopped (LockService.user_removed)
    ({"role": "access"}, True),
    ({"node": NODENAME}, True),
    ({"node": HOST_ID}, True),
    ({"login": LOGIN}, True),
    ({"user": "bob"}, False),
    ({"node": "db-1"}, False),
]


@pytest.mark.parametrize(
    ("target", "ends"),
    LOCKS,
    ids=[f"{next(iter(t))}={next(iter(t.values()))}" for t, _ in LOCKS],
)
def test_a_pushed_lock_ends_a_controlmaster_connection_within_5s(
    node: Node, control_dir: Path, target: dict[str, str], ends: bool
) -> None:
    key = node.certificate("alice")
    sock = control_dir / "m"
    _master(node, key, sock)
    assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 0
    live = subprocess.Popen(
        [*node.ssh(key, "-S", str(sock)), "sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)  # its session is open on the node
        node.push(lock(**target))
        pushed = time.monotonic()
        if not ends:
            time.sleep(1.0)
            assert _alive(node, key, sock)
            assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 0
            return
        _, stderr = live.communicate(timeout=SECONDS)
        while _alive(node, key, sock):
            assert time.monotonic() - pushed < LOCK_SECONDS, "the master outlived the lock"
            time.sleep(0.1)
        assert time.monotonic() - pushed < LOCK_SECONDS
    finally:
        live.kill()
        live.communicate()
    assert "is locked (incident 42)" in stderr, stderr
    again = _run([*node.ssh(key, "-S", str(sock), "-o", "ControlMaster=no"), "true"])
    assert again.returncode == 255
    assert "is locked (incident 42)" in again.stderr, again.stderr
    [end] = [e for e in node.events.of("session.end") if "sleep" in str(e)] or [
        e for e in node.events.of("session.end") if e["fields"].get("reason")
    ]
    assert "is locked (incident 42)" in end["fields"]["reason"]


def test_a_new_channel_of_an_expired_certificate_is_refused(node: Node, control_dir: Path) -> None:
    key = node.certificate("brief", seconds=4)
    sock = control_dir / "m"
    _master(node, key, sock)
    assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 0
    time.sleep(4.5)
    late = _run([*node.ssh(key, "-S", str(sock), "-o", "ControlMaster=no"), "echo ran"])
    assert (late.returncode, late.stdout) == (255, ""), late.stderr
    # A multiplexing client tells no reason, only that the master's peer refused.
    assert "Session open refused by peer" in late.stderr, late.stderr
    assert [e for e in node.events.of("session.rejected") if "expired" in e["fields"]["error"]]


LOGINS = [
    ({"env": "prod"}, True),
    ({"env": "prod*"}, True),
    ({"env": "staging"}, False),
    ({"team": "db"}, False),
]


@pytest.mark.parametrize(
    ("labels", "allowed"), LOGINS, ids=[json.dumps(labels) for labels, _ in LOGINS]
)
def test_a_role_that_does_not_allow_the_nodes_labels_is_refused_at_login(
    node: Node, labels: dict[str, str], allowed: bool
) -> None:
    node.proxy.roles["dev"] = role("dev", labels)
    key = node.certificate("dev", roles=("dev",))
    result = _run([*node.ssh(key), "echo in"])
    if allowed:
        assert (result.returncode, result.stdout) == (0, "in\n"), result.stderr
        return
    assert result.returncode == 255
    assert f"your roles do not allow login '{LOGIN}' on node '{NODENAME}'" in result.stderr
    [rejected] = node.events.of("session.rejected")
    assert (rejected["outcome"], rejected["fields"]["user"]) == ("W", "alice")


def test_a_role_moved_on_is_read_again_for_the_next_connection(node: Node) -> None:
    node.proxy.roles["dev"] = role("dev", {"env": "prod"})
    key = node.certificate("dev", roles=("dev",))
    assert _run([*node.ssh(key), "true"]).returncode == 0
    node.proxy.roles["dev"] = role("dev", {"env": "staging"})
    assert _run([*node.ssh(key), "true"]).returncode == 0  # the same revision: held
    node.push(revision="r2")
    assert _run([*node.ssh(key), "true"]).returncode == 255
    assert node.proxy.asked == [["dev"], ["dev"]]


def test_an_idle_session_ends_after_the_roles_idle_timeout(node: Node) -> None:
    node.proxy.roles["idle"] = role("idle", client_idle_timeout="2s")
    key = node.certificate("idle", roles=("idle",))
    started = time.monotonic()
    result = _run([*node.ssh(key), "sleep 30"])
    took = time.monotonic() - started
    assert 1.5 < took < 8, took
    assert result.returncode == 255
    assert "idle timeout" in result.stderr, result.stderr
    [end] = node.events.of("session.end")
    assert end["fields"]["reason"] == "idle timeout"


def test_input_keeps_a_session_from_idling_out(node: Node) -> None:
    node.proxy.roles["idle"] = role("idle", client_idle_timeout="2s")
    key = node.certificate("idle", roles=("idle",))
    typing = subprocess.Popen(
        [*node.ssh(key), "cat >/dev/null; echo done"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert typing.stdin is not None
    for _ in range(8):  # 4 s of input, a line every half second
        typing.stdin.write("x\n")
        typing.stdin.flush()
        time.sleep(0.5)
    out, err = typing.communicate(timeout=SECONDS)
    assert (typing.returncode, out) == (0, "done\n"), err


def test_disconnect_expired_cert_ends_the_session_when_it_expires(node: Node) -> None:
    node.proxy.roles["strict"] = role("strict", disconnect_expired_cert=True)
    key = node.certificate("strict", roles=("strict",), seconds=3)
    started = time.monotonic()
    result = _run([*node.ssh(key), "sleep 30"])
    assert time.monotonic() - started < 8
    assert result.returncode == 255
    assert "certificate has expired" in result.stderr, result.stderr
    [end] = node.events.of("session.end")
    assert "expired" in end["fields"]["reason"]


def test_without_disconnect_expired_cert_a_session_outlives_its_certificate(node: Node) -> None:
    key = node.certificate("lenient", seconds=2)
    result = _run([*node.ssh(key), "sleep 3; echo still"])
    assert (result.returncode, result.stdout) == (0, "still\n"), result.stderr


def test_a_lock_pushed_before_login_refuses_it(node: Node) -> None:
    node.push(lock(user="alice"))
    key = node.certificate("alice")
    result = _run([*node.ssh(key), "true"])
    assert result.returncode == 255
    assert "user 'alice' is locked (incident 42)" in result.stderr, result.stderr
    node.push()  # lifted: let back in
    assert _run([*node.ssh(key), "true"]).returncode == 0


def test_an_expired_lock_stops_nobody(node: Node) -> None:
    gone = lock(user="alice")
    expired = gone.model_copy(
        update={
            "spec": gone.spec.model_copy(
                update={"expires": datetime.now(UTC) - timedelta(seconds=1)}
            )
        }
    )
    node.push(expired)
    assert _run([*node.ssh(node.certificate("alice")), "true"]).returncode == 0


def test_a_forward_opens_no_new_connection_once_the_certificate_expired(
    node: Node, web: int
) -> None:
    """``-L`` asks for a ``direct-tcpip`` channel per connection it carries: after the
    certificate's expiry the node opens none, though the SSH connection stays up."""
    key = node.certificate("forward", seconds=4)
    expired = time.monotonic() + 4.5
    port = free_port()
    forward = subprocess.Popen(
        [*node.ssh(key, "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{port}:127.0.0.1:{web}")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + SECONDS
        while not _fetched(port):
            assert time.monotonic() < deadline, "the -L forward never carried"
            time.sleep(0.1)
        time.sleep(max(0.0, expired - time.monotonic()))
        assert fetch(port) == ""  # refused: the client closes what it accepted
        assert forward.poll() is None  # only what is new is refused
    finally:
        forward.kill()
        _, err = forward.communicate()
    assert "administratively prohibited" in err, err
    rejected = node.events.of("session.rejected")
    assert [e["fields"]["channel"] for e in rejected] == ["direct-tcpip"]


def _fetched(port: int) -> bool:
    try:
        return fetch(port).startswith("hello")
    except OSError:
        return False


@pytest.mark.parametrize(
    ("labels", "allowed"), [({"env": "prod"}, True), ({"env": "staging"}, False)],
    ids=["allowed", "refused"],
)  # fmt: skip
def test_a_session_opened_while_the_roles_are_read_waits_for_the_decision(
    node: Node, labels: dict[str, str], allowed: bool
) -> None:
    """OpenSSH opens its session as soon as it is authenticated; the node may still be
    reading the roles from the proxy then. The command runs only once they allow it."""
    node.proxy.roles["dev"] = role("dev", labels)
    node.proxy.delay = 1.5
    result = _run([*node.ssh(node.certificate("dev", roles=("dev",))), "echo ran"])
    if allowed:
        assert (result.returncode, result.stdout) == (0, "ran\n"), result.stderr
    else:
        assert (result.returncode, result.stdout) == (255, ""), result.stderr


@pytest.mark.parametrize(
    ("labels", "allowed"), [({"env": "prod"}, True), ({"env": "staging"}, False)],
    ids=["allowed", "refused"],
)  # fmt: skip
def test_a_unix_socket_forward_asked_while_the_roles_are_read_waits_for_the_decision(
    node: Node, control_dir: Path, labels: dict[str, str], allowed: bool
) -> None:
    """``ssh -R PATH:HOST:PORT`` asks at once, as ``-R PORT`` does: the node binds the socket
    as the login only once the roles allow it there (a refused login binds nothing)."""
    node.proxy.roles["dev"] = role("dev", labels)
    node.proxy.delay = 1.5
    path = control_dir / "fwd.sock"
    key = node.certificate("dev", roles=("dev",))
    forward = subprocess.Popen(
        [*node.ssh(key, "-N", "-o", "ExitOnForwardFailure=yes", "-R", f"{path}:127.0.0.1:9")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 4.0
        while not path.exists() and forward.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.exists() is allowed
    finally:
        forward.kill()
        forward.wait(SECONDS)


def test_a_role_changed_ends_a_controlmaster_connection_it_no_longer_allows(
    node: Node, control_dir: Path
) -> None:
    """A ControlMaster opens new sessions for hours over one authentication: when the roles
    move on (a new revision pushed) and no longer allow the login here, the connection ends
    instead of opening sessions on the old decision."""
    node.proxy.roles["dev"] = role("dev", {"env": "prod"})
    key = node.certificate("dev", roles=("dev",))
    sock = control_dir / "m"
    _master(node, key, sock)
    assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 0
    node.proxy.roles["dev"] = role("dev", {"env": "staging"})
    node.push(revision="r2")
    deadline = time.monotonic() + LOCK_SECONDS
    while _alive(node, key, sock):
        assert time.monotonic() < deadline, "the master outlived its roles"
        time.sleep(0.1)
    assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 255


def test_a_role_changed_that_still_allows_the_login_keeps_the_connection(
    node: Node, control_dir: Path
) -> None:
    node.proxy.roles["dev"] = role("dev", {"env": "prod"})
    key = node.certificate("dev", roles=("dev",))
    sock = control_dir / "m"
    _master(node, key, sock)
    node.proxy.roles["dev"] = role("dev", {"env": "^(prod|staging)$"})
    node.push(revision="r2")
    time.sleep(1.0)
    assert _alive(node, key, sock)
    assert _run([*node.ssh(key, "-S", str(sock)), "true"]).returncode == 0
    assert node.proxy.asked == [["dev"], ["dev"]]

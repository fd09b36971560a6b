"""Attacks on the node's sshd parity (issue 16's adversarial review), each on a real asyncssh
connection on 127.0.0.1 to the node's own session code, as the unprivileged ``nobody``.

Each test is an attack that must fail: what it would get is asserted absent."""

import asyncio
import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent import session_env, sessions, sftp_child, streamlocal
from jumpgate.node_agent import sftp_codec as wire
from jumpgate.node_agent.server import SERVER_VERSION
from jumpgate.node_agent.session_channel import SessionChannel
from jumpgate.node_agent.session_setup import SetupPolicy, open_setup
from jumpgate.protocol.tunnel_messages import SessionOrigin
from tests.net import test_forwarding as forwarding
from tests.net.test_forwarding import PORTS, Background, fetch, running_node, wait_listening
from tests.support import PassingObserver, free_port

pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(os.geteuid() != 0, reason="the node drops to the login only as root"),
]

SECONDS = 20.0
LOGIN = "nobody"
web = forwarding.web  # a web server on 127.0.0.1 to forward to (a fixture)


class _Node(asyncssh.SSHServer):
    """Sessions served as the node serves them: ``open_setup`` with ``policy`` (the
    client's accepted variables), then ``sessions.run``."""

    def __init__(self, tasks: asyncio.TaskGroup, policy: SetupPolicy) -> None:
        self.tasks = tasks
        self.policy = policy
        self.kept: list[int] = []  # how many env requests each session's channel kept

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return SessionChannel(self._serve, PassingObserver(), self.tasks.create_task)

    async def _serve(self, channel: SessionChannel) -> None:
        self.kept.append(len(channel.channel.get_environment()))
        account = sessions.Account.lookup(channel.get_extra_info("username"))
        setup = await open_setup(self.policy, channel, account)
        try:
            channel.finish(await sessions.run(channel, account, setup=setup))
        finally:
            await setup.close()


@asynccontextmanager
async def _connected(
    policy: SetupPolicy, login: str = LOGIN, nodes: list[_Node] | None = None
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    made = nodes if nodes is not None else []
    async with asyncio.TaskGroup() as tasks:

        def node() -> _Node:
            made.append(_Node(tasks, policy))
            return made[-1]

        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            server_factory=node,
            encoding=None,
            server_version=SERVER_VERSION,
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, username=login
            ) as conn:
                yield conn
        finally:
            server.close()
            await server.wait_closed()


def _run(case: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(case, SECONDS))


@pytest.fixture
def root_only() -> Iterator[Path]:
    """A directory only root may write in."""
    place = Path(tempfile.mkdtemp(prefix="jg-adv-", dir="/tmp"))
    place.chmod(0o755)
    yield place
    shutil.rmtree(place)


@pytest.mark.parametrize("pam", [False, True], ids=["", "pam"])
@pytest.mark.parametrize("accept_env", [("*",), ("LD_*",)], ids=["accept-everything", "accept-LD"])
def test_the_clients_variables_never_reach_the_sftp_child_while_it_is_root(
    root_only: Path, accept_env: tuple[str, ...], pam: bool, tmp_path: Path
) -> None:
    """The SFTP child starts as root and drops to the login itself (``sftp_child``): were it
    started with the client's ``env`` requests (an ``AcceptEnv`` the node takes), its
    dynamic linker would obey them as root: ``LD_PRELOAD`` is root's code, and here
    ``LD_DEBUG_OUTPUT`` has root write a file where the login may not."""
    policy = SetupPolicy(accept_env=accept_env, records=None)
    if pam:  # through the PAM launcher, which execs the child as root too
        (tmp_path / "jg-permit").write_text(
            "account required pam_permit.so\nsession required pam_permit.so\n"
        )
        policy = SetupPolicy(
            accept_env=accept_env, records=None, pam_service="jg-permit", pam_confdir=tmp_path
        )
    proof = root_only / "proof"
    env = {"LD_DEBUG": "files", "LD_DEBUG_OUTPUT": str(proof)}

    async def case() -> None:
        async with _connected(policy) as conn, conn.start_sftp_client(env=env) as sftp:
            assert await sftp.realpath(".") == "/"

    _run(case())
    written = [p for p in root_only.iterdir() if p.name.startswith("proof")]
    assert written == [], f"root obeyed the client's LD_DEBUG_OUTPUT: {written}"


def test_a_command_still_gets_the_variables_the_node_accepts() -> None:
    """What the fix must keep: a command (root's login here: ``nobody`` has no shell) sees
    the client's accepted variables, as with sshd."""
    policy = SetupPolicy(accept_env=("LC_*",), records=None)

    async def case() -> None:
        async with _connected(policy, "root") as conn:
            ran = await conn.run("echo $LC_PROOF", env={"LC_PROOF": "seen"}, encoding=None)
            assert ran.stdout == b"seen\n", ran

    _run(case())


def test_env_requests_past_sshds_limit_are_not_kept() -> None:
    """sshd refuses a session's env requests past 128 (``session_env_req``): each is held in
    memory of the agent, root's and every user's, until the session starts, and a client may
    send as many as it likes before it does (here 5,000 of 1 KiB, each named by the
    ``AcceptEnv`` pattern). The node keeps at most ``MAX_CLIENT_VARIABLES``."""
    policy = SetupPolicy(accept_env=("LC_*",), records=None)
    nodes: list[_Node] = []
    flood = {f"LC_{i}": "x" * 1024 for i in range(5000)}

    async def case() -> None:
        async with _connected(policy, "root", nodes) as conn:
            ran = await conn.run("env | grep -c ^LC_", env=flood, encoding=None)
            assert int(ran.stdout or b"0") == session_env.MAX_CLIENT_VARIABLES, ran

    _run(case())
    assert nodes[0].kept == [session_env.MAX_CLIENT_VARIABLES]


def test_the_sftp_childs_replies_are_not_all_held_at_once() -> None:
    """A client may send many READs in one write (pipelined, as every client does): the
    child must send replies as it makes them (the pipe's backpressure bounding it, as
    sftp-server's output queue bounds it), not make them all first: 600 READs of
    /dev/zero are 150 MiB of replies, from 25 KiB of requests."""
    account = sessions.Account.lookup(LOGIN)
    with subprocess.Popen(
        sftp_child.argv(account),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        **sftp_child.SPAWN_OPTIONS,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write(wire.packet(wire.FXP_INIT, wire.uint32(3)))
            child.stdin.write(
                wire.packet(3, wire.uint32(1), wire.string(b"/dev/zero"), wire.uint32(1), b"\0" * 4)
            )
            child.stdin.flush()
            replies = [_reply(child.stdout) for _ in range(2)]
            assert replies[1].byte() == wire.FXP_HANDLE
            replies[1].uint32()
            handle = replies[1].string()
            reads = b"".join(
                wire.packet(
                    5,
                    wire.uint32(n),
                    wire.string(handle),
                    wire.uint64(0),
                    wire.uint32(wire.MAX_READ),
                )
                for n in range(600)
            )
            writing = threading.Thread(target=_write, args=(child.stdin, reads))
            writing.start()
            for _ in range(600):
                assert _reply(child.stdout).byte() == wire.FXP_DATA
            writing.join(SECONDS)
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
            assert peak_kib < 64 * 1024, f"the child held {peak_kib // 1024} MiB at once"
        finally:
            child.kill()


def _reply(stdout: Any) -> wire.Reader:
    (length,) = struct.unpack(">I", stdout.read(4))
    return wire.Reader(stdout.read(length))


def _write(stdin: Any, data: bytes) -> None:
    stdin.write(data)
    stdin.flush()


def test_port_forwards_name_the_proxys_session_and_the_users_address(
    tmp_path: Path, web: int
) -> None:
    """``ssh -N -L`` opens no session channel: its ``port`` events are all the audit has of
    the connection on the node, and must be found by the id and address of the proxy's
    events of it (decision 0030), not only by a connection id the proxy never saw."""
    told = SessionOrigin(session_id=str(uuid.uuid4()), addr="203.0.113.7", port=50123)
    for node in running_node(tmp_path, told=told):
        key = node.certificate("key", PORTS)
        local = free_port()
        with Background(node.ssh(key, "-N", "-L", f"{local}:127.0.0.1:{web}")):
            wait_listening(local)
            assert fetch(local, "/through-L") == "hello from /through-L"
        [event] = node.events.of("port")
        fields = event["fields"]
        assert fields.get("session_id") == told.session_id, fields
        assert fields.get("remote_addr") == "203.0.113.7:50123", fields


def test_a_unix_socket_path_with_a_nul_is_refused_and_audited(tmp_path: Path) -> None:
    """A forwarded Unix socket's path is the client's string: one with a NUL byte (no
    path can hold one; the kernel would cut it there) must be refused as any other bad
    path, the refusal audited, and the user's connection go on; the helper that becomes
    the login cannot take it as an argument."""
    for node in running_node(tmp_path):
        key = node.certificate("key", PORTS, login=LOGIN)
        _run(_nul_paths(node.port, key))
        errors = [e["fields"]["addr"] for e in node.events.of("port") if e["outcome"] == "E"]
        assert errors == ["/tmp/a\0b", "/tmp/a\0b", "/nonexistent.sock"], errors


async def _nul_paths(port: int, key: Path) -> None:
    async with asyncssh.connect(
        "127.0.0.1", port, username=LOGIN, client_keys=[str(key)], known_hosts=None
    ) as conn:
        _, writer = await conn.open_unix_connection("/tmp/a\0b")
        await writer.channel.wait_closed()
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.start_unix_server(lambda *_: None, "/tmp/a\0b")
        assert not conn.is_closed()
        _, writer = await conn.open_unix_connection("/nonexistent.sock")  # still served
        await writer.channel.wait_closed()


@pytest.mark.parametrize(
    ("kind", "host", "port"),
    [
        ("connect", "127.0.0.1\0x", 80),
        ("connect", "127.0.0.1", 70000),
        ("listen", "127.0.0.1", 70000),
    ],
    ids=["connect-nul-host", "connect-port-past-65535", "listen-port-past-65535"],
)
def test_a_forward_to_no_address_is_refused_and_audited(
    tmp_path: Path, kind: str, host: str, port: int
) -> None:
    """A ``direct-tcpip`` or ``tcpip-forward`` carries its port as 32 bits and its host as
    any string: one no socket can take (a port past 65535, a NUL) is refused, audited, and
    the connection goes on, as sshd's ("invalid port")."""
    for node in running_node(tmp_path):
        key = node.certificate("key", PORTS, login=LOGIN)
        _run(_bad_forward(node.port, key, kind, host, port))
        refused = [e for e in node.events.of("port") if e["outcome"] in ("W", "E")]
        assert len(refused) == 1, node.events.items


async def _bad_forward(port: int, key: Path, kind: str, host: str, bad_port: int) -> None:
    async with asyncssh.connect(
        "127.0.0.1", port, username=LOGIN, client_keys=[str(key)], known_hosts=None
    ) as conn:
        if kind == "connect":
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection(host, bad_port)
            assert "SSH connection closed" not in str(refused.value)
        else:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.start_server(lambda *_: None, host, bad_port)
        await asyncio.sleep(0.2)
        assert not conn.is_closed()


@pytest.fixture
def account() -> Iterator[str]:
    """A throwaway OS account with a shell and no home, removed after."""
    name = f"jgadv{os.getpid()}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False)


def test_an_expired_account_gets_no_session(tmp_path: Path, account: str) -> None:
    """An admin ends an OS account with ``usermod --expiredate``; Debian's sshd then refuses
    it, whatever the key (PAM's ``pam_unix`` account stage, or sshd's own shadow check
    without PAM). The node, PAM off by default, must refuse it too."""
    for node in running_node(tmp_path):
        key = node.certificate("key", login=account)
        command = node.ssh(key, command="echo in", login=account)
        ran = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS)
        assert (ran.returncode, ran.stdout) == (0, "in\n"), ran.stderr
        subprocess.run(["usermod", "--expiredate", "2000-01-01", account], check=True)
        ran = subprocess.run(command, capture_output=True, text=True, timeout=SECONDS)
        assert ran.returncode == 255, (ran.returncode, ran.stdout)
        assert "Permission denied" in ran.stderr


def _helpers() -> int:
    """Processes now running ``streamlocal``'s helper (which becomes the login)."""
    count = 0
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and b"made.connect(path)" in (entry / "cmdline").read_bytes():
                count += 1
    return count


def test_unix_socket_helpers_are_bounded_across_the_agent(tmp_path: Path) -> None:
    """Each forwarded Unix socket of a login that is not root is a Python process of its
    own; one whose connect hangs (a listener that never accepts, its backlog full) lives
    ``HELPER_SECONDS``. A user must not hold 128 per connection (over a GiB) that way:
    the helpers running at once are bounded for the whole agent."""
    place = Path(tempfile.mkdtemp(prefix="jg-adv-", dir="/tmp"))
    place.chmod(0o755)
    path = str(place / "stuck.sock")
    stuck = socket.socket(socket.AF_UNIX)
    fillers = [socket.socket(socket.AF_UNIX) for _ in range(4)]
    try:
        stuck.bind(path)
        os.chmod(path, 0o666)  # noqa: S103  (nobody connects to it)
        stuck.listen(0)
        for filler in fillers:  # the backlog filled: a blocking connect now waits
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(path)
        for node in running_node(tmp_path):
            key = node.certificate("key", PORTS, login=LOGIN)
            seen = _run_for(_stuck_forwards(node.port, key, path, 48))
            assert seen <= streamlocal.HELPERS_AT_ONCE, f"{seen} helpers at once"
    finally:
        for made in (stuck, *fillers):
            made.close()
        shutil.rmtree(place)


def _run_for(case: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(asyncio.wait_for(case, SECONDS))


async def _stuck_forwards(port: int, key: Path, path: str, count: int) -> int:
    async with asyncssh.connect(
        "127.0.0.1", port, username=LOGIN, client_keys=[str(key)], known_hosts=None
    ) as conn:
        opened = [await conn.open_unix_connection(path) for _ in range(count)]
        most = 0
        for _ in range(20):  # two seconds, while they hang
            await asyncio.sleep(0.1)
            most = max(most, _helpers())
        for _, writer in opened:
            writer.close()
        return most


def test_unix_socket_forwards_are_refused_without_permit_port_forwarding(tmp_path: Path) -> None:
    """``-L port:/path`` and ``-R /path:...`` are port forwarding too (sshd's
    ``permit-port-forwarding`` covers them): without it, nothing is connected, bound or
    audited."""
    for node in running_node(tmp_path):
        key = node.certificate("key", forwarding.AGENT, login=LOGIN)
        bound = tmp_path / "bound.sock"
        _run(_unpermitted(node.port, key, str(bound)))
        assert not bound.exists()
        assert not node.events.of("port", seconds=0.5)


async def _unpermitted(port: int, key: Path, bound: str) -> None:
    async with asyncssh.connect(
        "127.0.0.1", port, username=LOGIN, client_keys=[str(key)], known_hosts=None
    ) as conn:
        with pytest.raises(asyncssh.ChannelOpenError, match=r"prohibited|not permitted"):
            await conn.open_unix_connection("/run/systemd/private")
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.start_unix_server(lambda *_: None, bound)

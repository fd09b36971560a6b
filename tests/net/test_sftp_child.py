"""The node's own SFTP server (``sftp_child``, ``sftp_server``) as a plain user.

Sessions are served the way the node serves them (``sessions.run`` behind an
``ObservedProcess``) on a real asyncssh connection on 127.0.0.1, to asyncssh's SFTP client,
as ``nobody``: what that user may do works, what it may not is refused with SFTP's status
codes and the session goes on. The raw tests speak the protocol to the child's pipes, for
what no client sends on purpose.
"""

import asyncio
import contextlib
import os
import pwd
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from jumpgate.node_agent import sessions, sftp_child
from jumpgate.node_agent import sftp_codec as wire
from jumpgate.node_agent.server import SERVER_VERSION
from jumpgate.node_agent.session_channel import SessionChannel
from jumpgate.node_agent.sftp_server import EXTENSIONS, MAX_HANDLES
from tests.support import PassingObserver

pytestmark = pytest.mark.net

SECONDS = 20.0
LOGIN = "nobody"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the node switches to the login only when it runs as root")


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory with ``mine`` (the login's) and ``theirs`` (root's, a 0600 ``secret`` and a
    0644 ``public`` in it), under /tmp, where ``nobody`` can reach it."""
    root = Path(tempfile.mkdtemp(prefix="jg-sftp-", dir="/tmp"))
    root.chmod(0o755)
    nobody = pwd.getpwnam(LOGIN)
    (root / "mine").mkdir()
    os.chown(root / "mine", nobody.pw_uid, nobody.pw_gid)
    (root / "theirs").mkdir()
    (root / "theirs" / "secret").write_text("root only\n")
    (root / "theirs" / "secret").chmod(0o600)
    (root / "theirs" / "public").write_text("everyone\n")
    yield root
    shutil.rmtree(root)


async def _serve(channel: SessionChannel) -> None:
    account = sessions.Account.lookup(channel.get_extra_info("username"))
    channel.finish(await sessions.run(channel, account))


class _Node(asyncssh.SSHServer):
    def __init__(self, tasks: asyncio.TaskGroup) -> None:
        self.tasks = tasks

    def begin_auth(self, username: str) -> bool:
        return False

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return SessionChannel(_serve, PassingObserver(), self._spawn)

    def _spawn(self, handler: Coroutine[Any, Any, None]) -> None:
        self.tasks.create_task(handler)


@asynccontextmanager
async def _sftp(login: str = LOGIN) -> AsyncIterator[asyncssh.SFTPClient]:
    async with asyncio.TaskGroup() as tasks:
        key = asyncssh.generate_private_key("ssh-ed25519")
        server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[key],
            server_factory=lambda: _Node(tasks),
            encoding=None,
            server_version=SERVER_VERSION,  # the node's: clients adjust to what it says
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with (
                asyncssh.connect("127.0.0.1", port, known_hosts=None, username=login) as conn,
                conn.start_sftp_client() as sftp,
            ):
                yield sftp
        finally:
            server.close()
            await server.wait_closed()


def _run(case: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(case, SECONDS))


def test_a_plain_user_works_with_its_own_files(place: Path) -> None:
    mine = place / "mine"
    nobody = pwd.getpwnam(LOGIN)

    async def case() -> None:
        async with _sftp() as sftp:
            assert await sftp.realpath(".") == "/"  # nobody's home does not exist: /, as sshd
            async with sftp.open(str(mine / "f"), "wb") as file:
                await file.write(b"x" * 100_000)
                await file.fsync()
                assert (await file.stat()).size == 100_000
            async with sftp.open(str(mine / "f"), "rb") as file:
                data: Any = await file.read()  # bytes: the file is opened in binary mode
                assert data == b"x" * 100_000
            assert (await sftp.stat(str(mine / "f"))).uid == nobody.pw_uid
            await sftp.chmod(str(mine / "f"), 0o640)
            await sftp.truncate(str(mine / "f"), 10)
            await sftp.utime(str(mine / "f"), (1_000_000, 2_000_000))
            attrs = await sftp.stat(str(mine / "f"))
            assert (attrs.permissions or 0) & 0o777 == 0o640
            assert (attrs.mtime, attrs.size) == (2_000_000, 10)
            await sftp.mkdir(str(mine / "d"))
            await sftp.rmdir(str(mine / "d"))
            await sftp.symlink(str(mine / "f"), str(mine / "link"))
            assert await sftp.readlink(str(mine / "link")) == str(mine / "f")
            assert (await sftp.lstat(str(mine / "link"))).type == asyncssh.FILEXFER_TYPE_SYMLINK
            await sftp.link(str(mine / "f"), str(mine / "hard"))
            await sftp.rename(str(mine / "hard"), str(mine / "other"))
            await sftp.remove(str(mine / "other"))
            async with sftp.open(str(mine / "other"), "wb") as file:
                await file.write(b"other")
            with pytest.raises(asyncssh.SFTPFailure):
                await sftp.rename(str(mine / "other"), str(mine / "f"))  # v3: never replaces
            await sftp.posix_rename(str(mine / "other"), str(mine / "f"))  # replaces
            lsetstat = asyncssh.SFTPAttrs(permissions=0o600)
            await sftp.setstat(str(mine / "f"), lsetstat, follow_symlinks=False)
            assert ((await sftp.stat(str(mine / "f"))).permissions or 0) & 0o777 == 0o600
            names = set(await sftp.listdir(str(mine)))
            assert names == {".", "..", "f", "link"}, names
            await sftp.remove(str(mine / "link"))
            assert (await sftp.statvfs(str(mine))).namemax > 0
            assert sftp.limits.max_read_len == wire.MAX_READ

    _run(case())
    assert sorted(p.name for p in mine.iterdir()) == ["f"]
    assert (mine / "f").read_bytes() == b"other"
    assert (mine / "f").stat().st_uid == nobody.pw_uid


async def _open(sftp: asyncssh.SFTPClient, path: str, mode: str) -> None:
    async with sftp.open(path, mode) as file:
        await file.write(b"x")


Attempt = Callable[[asyncssh.SFTPClient, Callable[[str], str]], Awaitable[Any]]
REFUSED: list[tuple[str, Attempt, type[Exception]]] = [
    ("read-secret", lambda c, at: c.open(at("theirs/secret"), "rb"), asyncssh.SFTPPermissionDenied),
    (
        "write-in-theirs",
        lambda c, at: _open(c, at("theirs/n"), "wb"),
        asyncssh.SFTPPermissionDenied,
    ),
    ("remove-theirs", lambda c, at: c.remove(at("theirs/public")), asyncssh.SFTPPermissionDenied),
    ("mkdir-in-theirs", lambda c, at: c.mkdir(at("theirs/d")), asyncssh.SFTPPermissionDenied),
    (
        "chmod-theirs",
        lambda c, at: c.chmod(at("theirs/public"), 0o777),
        asyncssh.SFTPPermissionDenied,
    ),
    (
        "rename-theirs",
        lambda c, at: c.posix_rename(at("theirs/public"), at("mine/p")),
        asyncssh.SFTPPermissionDenied,
    ),
    ("stat-missing", lambda c, at: c.stat(at("mine/none")), asyncssh.SFTPNoSuchFile),
    ("rmdir-theirs", lambda c, at: c.rmdir(at("theirs")), asyncssh.SFTPPermissionDenied),
    ("list-missing", lambda c, at: c.listdir(at("none")), asyncssh.SFTPNoSuchFile),
    ("link-missing", lambda c, at: c.readlink(at("mine/none")), asyncssh.SFTPNoSuchFile),
]


@pytest.mark.parametrize(
    ("attempt", "error"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_what_the_user_may_not_do_is_refused_with_its_status(
    place: Path, attempt: Attempt, error: type[Exception]
) -> None:
    async def case() -> None:
        async with _sftp() as sftp:
            with pytest.raises(error):
                await attempt(sftp, lambda path: str(place / path))
            assert await sftp.exists(str(place / "theirs" / "public"))  # the session goes on

    _run(case())
    assert (place / "theirs" / "public").read_text() == "everyone\n"
    assert (place / "theirs" / "public").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (place / "theirs").iterdir()) == ["public", "secret"]


# -- the raw protocol, on the child's pipes ------------------------------------------------


class _Child:
    """The SFTP child of a ``nobody`` session, spoken to directly."""

    def __init__(self) -> None:
        account = sessions.Account.lookup(LOGIN)
        self.process = subprocess.Popen(
            sftp_child.argv(account),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=account.environment(None),
            **sftp_child.SPAWN_OPTIONS,
        )

    def send(self, kind: int, *fields: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(wire.packet(kind, *fields))
        self.process.stdin.flush()

    def receive(self) -> wire.Reader:
        assert self.process.stdout is not None
        (length,) = struct.unpack(">I", self.process.stdout.read(4))
        return wire.Reader(self.process.stdout.read(length))

    def status(self, request_id: int) -> int:
        reply = self.receive()
        assert (reply.byte(), reply.uint32()) == (wire.FXP_STATUS, request_id)
        return reply.uint32()

    def close(self) -> int:
        with contextlib.suppress(BrokenPipeError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        return self.process.wait(timeout=SECONDS)


@pytest.fixture
def child() -> Iterator[_Child]:
    started = _Child()
    with started.process:  # its pipes closed and the child waited for, whatever happened
        yield started
        if started.process.poll() is None:
            started.process.kill()


def _started(child: _Child) -> None:
    child.send(wire.FXP_INIT, wire.uint32(3))
    reply = child.receive()
    assert (reply.byte(), reply.uint32()) == (wire.FXP_VERSION, 3)
    offered = []
    while reply.at < len(reply.data):
        offered.append((reply.string(), reply.string()))
    assert offered == list(EXTENSIONS)


def test_the_child_is_the_login_and_nothing_more(child: _Child) -> None:
    _started(child)
    nobody = pwd.getpwnam(LOGIN)
    status = Path(f"/proc/{child.process.pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].split() for line in status}
    assert fields["Uid"] == [str(nobody.pw_uid)] * 4
    assert fields["Gid"] == [str(nobody.pw_gid)] * 4
    assert fields["Groups"] == [str(g) for g in os.getgrouplist(LOGIN, nobody.pw_gid)]
    assert Path(f"/proc/{child.process.pid}/cwd").resolve() == Path("/")
    assert child.close() == 0


def test_requests_it_cannot_serve_are_answered_and_the_session_goes_on(child: _Child) -> None:
    _started(child)
    child.send(99, wire.uint32(1))  # unknown: no answer, as sftp-server
    child.send(wire.FXP_EXTENDED, wire.uint32(2), wire.string(b"nosuch@example.com"))
    assert child.status(2) == wire.FX_OP_UNSUPPORTED
    child.send(3, wire.uint32(3), wire.string(b"/etc/passwd"))  # OPEN without its flags
    assert child.status(3) == wire.FX_BAD_MESSAGE
    child.send(5, wire.uint32(4), wire.string(b"nohandle"), wire.uint64(0), wire.uint32(10))
    assert child.status(4) == wire.FX_FAILURE
    child.send(17, wire.uint32(5), wire.string(b"/etc/pass\0wd"))
    assert child.status(5) == wire.FX_BAD_MESSAGE
    child.send(3, wire.uint32(6), wire.string(b"/etc/shadow"), wire.uint32(1), wire.uint32(0))
    assert child.status(6) == wire.FX_PERMISSION_DENIED
    child.send(17, wire.uint32(7), wire.string(b"/"))
    reply = child.receive()
    assert (reply.byte(), reply.uint32()) == (wire.FXP_ATTRS, 7)
    assert child.close() == 0


@pytest.mark.parametrize(
    ("extension", "argument", "path"),
    [
        (b"expand-path@openssh.com", b"~", b"/nonexistent"),  # nobody's home, as it says
        (b"expand-path@openssh.com", b"~root/.", b"/root"),
        (b"home-directory", b"root", b"/root"),
    ],
    ids=["expand-own-home", "expand-user", "home-directory"],
)
def test_paths_are_expanded(child: _Child, extension: bytes, argument: bytes, path: bytes) -> None:
    _started(child)
    child.send(wire.FXP_EXTENDED, wire.uint32(1), wire.string(extension), wire.string(argument))
    reply = child.receive()
    assert (reply.byte(), reply.uint32(), reply.uint32()) == (wire.FXP_NAME, 1, 1)
    assert reply.string() == path
    assert child.close() == 0


def test_open_files_are_bounded(child: _Child) -> None:
    _started(child)
    for request in range(MAX_HANDLES):
        child.send(
            3, wire.uint32(request), wire.string(b"/dev/null"), wire.uint32(1), wire.uint32(0)
        )
        assert child.receive().byte() == wire.FXP_HANDLE
    child.send(3, wire.uint32(9999), wire.string(b"/dev/null"), wire.uint32(1), wire.uint32(0))
    assert child.status(9999) == wire.FX_FAILURE
    assert child.close() == 0


@pytest.mark.parametrize(
    "stream",
    [
        wire.packet(17, wire.uint32(1), wire.string(b"/")),  # a request before INIT
        struct.pack(">I", wire.MAX_PACKET + 1) + b"\0" * 64,  # longer than any request
    ],
    ids=["before-init", "too-long"],
)
def test_a_stream_that_is_not_sftp_ends_the_child(child: _Child, stream: bytes) -> None:
    assert child.process.stdin is not None
    child.process.stdin.write(stream)
    child.process.stdin.flush()
    assert child.process.wait(timeout=SECONDS) == 1


def _children_serving_sftp() -> set[int]:
    """Pids of this process's children running the SFTP child."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and b"sftp_child" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def test_a_lost_client_ends_its_child(place: Path) -> None:
    async def case() -> set[int]:
        async with _sftp() as sftp:
            await sftp.stat(str(place))
            serving = _children_serving_sftp()
            assert len(serving) == 1
            sftp.exit()  # the client goes; the channel with it
        return serving

    serving = asyncio.run(asyncio.wait_for(case(), SECONDS))
    for _ in range(100):
        if not serving & _children_serving_sftp():
            break
        time.sleep(0.1)
    assert not serving & _children_serving_sftp()

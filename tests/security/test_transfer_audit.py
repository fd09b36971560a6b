"""Issue 14, transfers: sftp and scp writes escaped the transfer audit (only session.start/end
were written). A first scp file named ``\\xff`` or an sftp ``mkdir`` of such a name threw the
watcher off for the rest of the stream; a handle never closed, a rename through OpenSSH's
``posix-rename@openssh.com``, a hard link and a chmod through a handle were never reported.
Each now yields its event, through the real platform with real clients."""

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.e2e.conftest import LOGIN, Site, audit_events, openssh_sftp, user_ssh_options

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _through_the_platform(
    site: Site, work: Callable[[asyncssh.SSHClientConnection], Awaitable[None]]
) -> None:
    """Run ``work`` on an asyncssh connection to web-1 through the proxy, as the user."""
    options = user_ssh_options(site, LOGIN)

    async def go() -> None:
        async with asyncssh.connect("127.0.0.1", site.cluster.ssh_port, **options) as proxy:
            node = await asyncssh.connect("web-1", 22, tunnel=proxy, **options)
            try:
                await work(node)
            finally:
                node.abort()

    asyncio.run(asyncio.wait_for(go(), 60))


def _events(site: Site, kind: str, wanted: Callable[[list[dict[str, Any]]], bool]) -> Any:
    """The ``kind`` events once ``wanted`` holds of them (or what there is after 20 s)."""
    found: list[dict[str, Any]] = []
    for _ in range(40):
        found = audit_events(site, kind, 1, seconds=0.5)
        if wanted(found):
            break
    return found


def test_scp_files_after_an_undecodable_name_are_audited(site: Site, tmp_path: Path) -> None:
    target = tmp_path / "in"
    target.mkdir()

    async def work(node: asyncssh.SSHClientConnection) -> None:
        process = await node.create_process(f"scp -t {target}", encoding=None)
        assert await process.stdout.readexactly(1) == b"\0"
        for name in (b"\xffbad", b"hidden-file"):
            process.stdin.write(b"C0644 7 %s\n" % name)
            assert await process.stdout.readexactly(1) == b"\0"
            process.stdin.write(b"secret\n\0")
            assert await process.stdout.readexactly(1) == b"\0"
        process.stdin.write_eof()
        await process.wait(check=False)

    _through_the_platform(site, work)
    assert (target / "hidden-file").read_bytes() == b"secret\n"
    events = _events(site, "scp", lambda found: len(found) >= 2)
    paths = {(e["action"], e["path"], e["length"]) for e in events}
    assert ("upload", f"{target}/hidden-file", 7) in paths, events
    assert ("upload", f"{target}/\\xffbad", 7) in paths, events


def test_scp_absurd_length_is_audited_and_refused(site: Site, tmp_path: Path) -> None:
    async def work(node: asyncssh.SSHClientConnection) -> None:
        process = await node.create_process(f"scp -t {tmp_path}", encoding=None)
        assert await process.stdout.readexactly(1) == b"\0"
        process.stdin.write(b"C0644 %d huge\n" % 10**23)
        await asyncio.wait_for(process.wait(check=False), 20)  # the channel is closed

    _through_the_platform(site, work)
    events = _events(site, "scp", bool)
    assert [(e["code"][-1], e["path"], e["length"]) for e in events] == [
        ("W", f"{tmp_path}/huge", 10**23)
    ], events
    assert not (tmp_path / "huge").exists()


def test_sftp_writes_that_escaped_are_audited(site: Site, tmp_path: Path) -> None:
    async def work(node: asyncssh.SSHClientConnection) -> None:
        async with node.start_sftp_client() as sftp:
            with pytest.raises(asyncssh.SFTPError):
                await sftp.mkdir(b"/nonexistent-dir/\xff\xfe")
            async with sftp.open(str(tmp_path / "after-mkdir"), "w") as file:
                await file.write("x" * 10)
        sftp = await node.start_sftp_client()
        file = await sftp.open(str(tmp_path / "never-closed"), "w")
        await file.write("payload-unaudited\n")
        await sftp.posix_rename(str(tmp_path / "never-closed"), str(tmp_path / "renamed"))
        await sftp.link(str(tmp_path / "renamed"), str(tmp_path / "hardlinked"))
        await file.chmod(0o755)  # FSETSTAT

    _through_the_platform(site, work)
    assert (tmp_path / "hardlinked").read_bytes() == b"payload-unaudited\n"

    def seen(found: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(e["action"], e["path"]) for e in found}

    wanted = {
        ("write", str(tmp_path / "after-mkdir")),
        ("write", str(tmp_path / "never-closed")),
        ("rename", str(tmp_path / "never-closed")),
        ("hardlink", str(tmp_path / "renamed")),
        ("fsetstat", str(tmp_path / "never-closed")),
    }
    events = _events(site, "sftp", lambda found: wanted <= seen(found))
    assert wanted <= seen(events), events
    [unclosed] = [
        e for e in events if e["path"] == str(tmp_path / "never-closed") and e["action"] == "write"
    ]
    assert unclosed["length"] == len(b"payload-unaudited\n")


def test_openssh_sftp_rename_is_audited(site: Site, tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"x")
    done = openssh_sftp(site, tmp_path, f"rename {tmp_path}/old {tmp_path}/new\n")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "new").exists()
    events = _events(site, "sftp", bool)
    assert [(e["action"], e["path"], e["target"]) for e in events] == [
        ("rename", f"{tmp_path}/old", f"{tmp_path}/new")
    ], events


def test_sftp_stream_the_watcher_cannot_follow_is_audited_and_stopped(
    site: Site, tmp_path: Path
) -> None:
    """An OPEN cut short: the watcher cannot follow what comes after it, so the transfer ends
    with a ``W`` event rather than going on unwatched."""
    late = tmp_path / "after-garbage"

    async def work(node: asyncssh.SSHClientConnection) -> None:
        process = await node.create_process(subsystem="sftp", encoding=None)
        process.stdin.write(struct.pack(">IBI", 5, 1, 3))  # INIT, version 3
        (length,) = struct.unpack(">I", await process.stdout.readexactly(4))
        await process.stdout.readexactly(length)  # VERSION
        process.stdin.write(struct.pack(">IBIH", 7, 3, 1, 0))  # OPEN with half a path length
        path = str(late).encode()
        body = struct.pack(">BI", 3, 2) + struct.pack(">I", len(path)) + path
        body += struct.pack(">II", 0x1A, 0)  # WRITE|CREAT|TRUNC, no attributes
        process.stdin.write(struct.pack(">I", len(body)) + body)
        await asyncio.wait_for(process.wait(check=False), 20)  # the node closed the channel

    _through_the_platform(site, work)
    events = _events(site, "sftp", bool)
    assert [(e["code"][-1], e["action"]) for e in events] == [("W", "unfollowed")], events
    assert "sftp stream not followed" in events[0]["error"]
    assert not late.exists()

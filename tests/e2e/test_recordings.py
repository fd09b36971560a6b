"""Recordings end to end: recorded on the node, streamed through the proxy, played back."""

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from asciinema.asciicast import v2 as asciicast_v2

from jumpgate.protocol import ports
from jumpgate.protocol.tunnel import LISTEN_HOST
from tests.e2e.conftest import (
    BIN,
    LOGIN,
    Administered,
    Site,
    as_the_node,
    audit_events,
    pty_session,
    running_site,
)
from tests.support import Fault, SwitchedMoto, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def jump(
    site: Administered, *argv: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "jump"), *argv],
        input=stdin,
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def uploads(site: Administered, count: int, seconds: float = 30) -> list[dict[str, Any]]:
    """``jump recordings ls`` once it lists ``count`` recordings, oldest first."""
    deadline = time.monotonic() + seconds
    while True:
        rows = list(site.admin.ok("jump", "recordings", "ls", "--format", "json").json())
        if len(rows) >= count or time.monotonic() > deadline:
            return rows[::-1]
        time.sleep(0.3)


def test_pty_and_exec_sessions_are_recorded_audited_and_played(site: Site, tmp_path: Path) -> None:
    done = jump(site, "ssh", "web-1", "echo recorded-exec-output; exit 4")
    assert (done.returncode, done.stdout) == (4, b"recorded-exec-output\n")
    _, seen = pty_session(site, b"echo shell-$((6*7)); exit\n")
    assert b"shell-42" in seen
    exec_row, shell_row = uploads(site, 2)
    assert (exec_row["kind"], shell_row["kind"]) == ("exec", "shell")
    assert (shell_row["user"], shell_row["login"], shell_row["nodename"]) == (
        "alice",
        LOGIN,
        "web-1",
    )

    # the audit log has the whole story of both sessions
    search = ["jumpctl", "audit", "search", "--format", "json"]
    events = site.admin.ok(*search).json()
    kinds = {(e["type"], e.get("session_id")) for e in events}
    for row in (exec_row, shell_row):
        assert ("session.start", row["session_id"]) in kinds
        assert ("session.end", row["session_id"]) in kinds
        assert ("session.upload", row["session_id"]) in kinds
    [executed] = [e for e in events if e["type"] == "exec"]
    assert (executed["exit_code"], executed["code"]) == (4, "J3002E")
    assert any(e["type"] == "user.login" for e in events)

    # asciicast v2, as asciinema itself reads it
    for row, expected in ((exec_row, "recorded-exec-output"), (shell_row, "shell-42")):
        cast = jump(site, "play", row["session_id"], "--format", "asciicast")
        assert cast.returncode == 0, cast.stderr
        path = tmp_path / f"{row['session_id']}.cast"
        path.write_bytes(cast.stdout)
        with path.open(encoding="utf-8") as cast_file:
            first = cast_file.readline()
            with asciicast_v2.open_from_file(first, cast_file) as parsed:
                header = parsed.v2_header
                printed = "".join(e[2] for e in parsed.events("o"))
        assert header["version"] == 2
        assert header["width"] > 0
        assert header["height"] > 0
        assert expected in printed
        shown = subprocess.run(
            [str(BIN / "asciinema"), "cat", str(path)], capture_output=True, timeout=30
        )
        assert shown.returncode == 0, shown.stderr
        assert expected.encode() in shown.stdout
    shell_cast = (tmp_path / f"{shell_row['session_id']}.cast").read_text().splitlines()
    assert json.loads(shell_cast[0])["env"]["TERM"] == "xterm"
    text = jump(site, "play", exec_row["session_id"], "--format", "text")
    assert text.stdout == b"recorded-exec-output\n"
    replay = jump(site, "play", exec_row["session_id"], "--speed", "10")
    assert replay.stdout == b"recorded-exec-output\n"
    verified = site.admin.ok("jumpctl", "recordings", "verify", shell_row["session_id"])
    assert "as recorded, complete and signed" in verified.out


def test_a_window_change_is_audited_and_recorded(site: Site, tmp_path: Path) -> None:
    typed = b"echo before-resize; sleep 1; echo after-resize; exit\n"
    status, seen = pty_session(site, typed, resize=(b"before-resize", 111, 33))
    assert status == 0
    assert b"after-resize" in seen
    [row] = uploads(site, 1)
    # The node sends its events in the background; on a loaded machine (the suite's workers
    # share two cores) they can take a while.
    resized = [
        (e["session_id"], e["size"], e["code"])
        for e in audit_events(site, "resize", 1, seconds=45)
        if e.get("origin") == "node"
    ]
    assert (row["session_id"], "111:33", "J2002I") in resized, resized
    cast = jump(site, "play", row["session_id"], "--format", "asciicast").stdout.splitlines()
    assert [json.loads(line)[2] for line in cast[1:] if json.loads(line)[1] == "r"] == ["111x33"]


STREAM = "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.01; done"
"""An exec session that prints numbered lines until it is cut off."""


def _streaming(site: Site) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "jump"), "ssh", "web-1", STREAM],
        env=site.admin.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def _lines_printed(process: subprocess.Popen[bytes], count: int = 25, seconds: float = 60) -> bytes:
    """The session's first ``count`` lines, once it has printed them: a fixed sleep was too
    short on a loaded machine, where the login's shell starts slowly (bash reads ~/.bashrc
    for a command over SSH, as under sshd)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + seconds
    while seen.count(b"\n") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    assert seen.count(b"\n") >= count, seen[-200:]
    return seen


def _printed_until_cut(process: subprocess.Popen[bytes], head: bytes) -> bytes:
    out, _ = process.communicate(timeout=60)
    return head + out


def _recorded(site: Site, count: int = 1, seconds: float = 60) -> bytes:
    rows = uploads(site, count, seconds)
    assert len(rows) == count, rows
    played = jump(site, "play", rows[-1]["session_id"], "--format", "text")
    assert played.returncode == 0, played.stderr
    return played.stdout


def test_every_printed_byte_survives_kill_9_of_the_agent(site: Site) -> None:
    session = _streaming(site)
    head = _lines_printed(session)
    site.node.kill(signal.SIGKILL)
    printed = _printed_until_cut(session, head)
    assert uploads(site, 1, seconds=1) == []  # it was not finished before the kill
    site.node.restart()
    site.node.wait_tunnel()
    recorded = _recorded(site)
    assert recorded.startswith(printed), (len(printed), len(recorded))
    ends = site.admin.ok("jumpctl", "audit", "search", "--type", "session.end", "--format", "json")
    assert any(e.get("reason") == "the agent stopped during the session" for e in ends.json())


def test_upload_resumes_after_the_proxy_stops_mid_upload(site: Site) -> None:
    session = _streaming(site)
    head = _lines_printed(session)
    site.cluster.stop()
    printed = _printed_until_cut(session, head)
    time.sleep(1)
    site.cluster.start()
    recorded = _recorded(site)
    assert recorded.startswith(printed), (len(printed), len(recorded))
    sid = uploads(site, 1)[0]["session_id"]
    assert (
        "as recorded, complete and signed"
        in site.admin.ok("jumpctl", "recordings", "verify", sid).out
    )


def test_scp_and_sftp_transfers_are_audited_with_path_and_length(
    site: Site, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300_000))
    config = tmp_path / "jump_config"
    config.write_text(site.admin.ok("jump", "config").out)
    node = f"{LOGIN}@web-1.acme.localhost"

    def openssh(*argv: str, stdin: bytes | None = None) -> None:
        done = subprocess.run([*argv], input=stdin, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr

    legacy_up = tmp_path / "legacy-up.bin"
    legacy_down = tmp_path / "legacy-down.bin"
    openssh("scp", "-O", "-F", str(config), str(source), f"{node}:{legacy_up}")
    openssh("scp", "-O", "-F", str(config), f"{node}:{legacy_up}", str(legacy_down))
    assert legacy_down.read_bytes() == source.read_bytes()
    upload, download = audit_events(site, "scp", 2)
    assert (upload["action"], upload["path"], upload["length"]) == (
        "upload",
        str(legacy_up),
        300_000,
    )
    assert (download["action"], download["path"], download["length"]) == (
        "download",
        str(legacy_up),
        300_000,
    )
    assert (upload["code"], upload["user"], upload["origin"]) == ("J3004I", "alice", "node")

    sftp_up = tmp_path / "sftp-up.bin"
    site.admin.ok("jump", "scp", "-q", str(source), f"web-1:{sftp_up}")
    openssh(
        "sftp",
        "-F",
        str(config),
        "-b",
        "-",
        node,
        stdin=f"get {sftp_up} {tmp_path / 'sftp-down.bin'}\nrm {sftp_up}\n".encode(),
    )
    events = audit_events(site, "sftp", 2)
    summary = [(e["action"], e["path"], e.get("length")) for e in events]
    assert ("read", str(sftp_up), 300_000) in summary
    assert ("remove", str(sftp_up), None) in summary
    assert all(e["code"] == "J8000I" for e in events)
    # ``jump scp`` over SFTP is audited as what the user ran: scp (decision 0029).
    by_jump_scp = [e for e in audit_events(site, "scp", 3) if e["path"] == str(sftp_up)]
    assert [(e["action"], e["length"], e["code"]) for e in by_jump_scp] == [
        ("write", 300_000, "J3004I")
    ]


@pytest.fixture
def s3_site(tmp_path: Path) -> Iterator[tuple[Site, "MotoS3"]]:
    moto = MotoS3(free_port())
    moto.start()
    moto.reset()  # moto keeps its buckets in this process: start from none
    uri = f"s3://jg-recordings/sessions?region=us-east-1&endpoint=http://127.0.0.1:{moto.port}"
    with running_site(tmp_path, f'audit_sessions_uri: "{uri}"\n') as built:
        yield built, moto
    moto.stop()


SLOW_DOWN: Fault = (
    "503 Slow Down",
    "application/xml",
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>",
)


class MotoS3(SwitchedMoto):
    """moto as S3, which can go away or answer every request with 503 SlowDown."""

    @property
    def failing(self) -> bool:
        return self.fault is not None

    @failing.setter
    def failing(self, value: bool) -> None:
        self.fault = (lambda _: SLOW_DOWN) if value else None

    def keys(self) -> set[str]:
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=self.url)
        listed = s3.list_objects_v2(Bucket="jg-recordings", Prefix="sessions/")
        return {o["Key"] for o in listed.get("Contents", [])}


@pytest.mark.parametrize("fault", ["503 SlowDown", "unreachable"])
def test_recording_waits_on_the_node_while_the_store_fails(
    s3_site: tuple[Site, MotoS3], fault: str
) -> None:
    site, moto = s3_site
    if fault == "unreachable":
        moto.stop()
    else:
        moto.failing = True
    done = jump(site, "ssh", "web-1", "seq 1 5000")
    assert done.returncode == 0, done.stderr
    time.sleep(8)  # the agent tries, the platform answers "store unavailable", nothing is lost
    spooled = list((site.node.directory / "recordings").iterdir())
    assert len(spooled) == 1
    log = site.node.log.read_text()
    assert "recording not taken yet, will retry" in log
    if fault == "unreachable":
        moto.start()
    else:
        moto.failing = False
    recorded = _recorded(site)
    assert recorded == done.stdout
    sid = spooled[0].name
    deadline = time.monotonic() + 10  # deleted only once the platform confirmed it
    while spooled[0].exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not spooled[0].exists()
    assert moto.keys() == {
        f"sessions/acme/{sid}",
        f"sessions/acme/{sid}.meta.json",
        f"sessions/acme/{sid}.manifest.json",
    }


def test_bad_requests_on_the_recording_channel_get_one_line(site: Site) -> None:
    """A node's own key cannot crash its recording channel or store nonsense."""
    sid = "0" * 8 + "-0000-4000-8000-" + "0" * 12

    async def ask(*lines: bytes) -> list[bytes]:
        async with as_the_node(site) as conn:
            reader, writer = await conn.open_connection(LISTEN_HOST, ports.RECORDINGS)
            answers = []
            for line in lines:
                writer.write(line)
                answers.append(await asyncio.wait_for(reader.readline(), 10))
            writer.close()
            return answers

    answers = asyncio.run(
        ask(
            b"not json\n",
            b"[1, 2]\n",
            b'{"op": "status", "session_id": "../../etc"}\n',
            json.dumps({"op": "status", "session_id": sid, "meta": "not an object"}).encode()
            + b"\n",
            json.dumps({"op": "complete", "session_id": sid, "parts": 1, "end": {}}).encode()
            + b"\n",
            b'{"op": "dance"}\n',
            json.dumps({"op": "part", "session_id": sid, "index": 1, "size": 10**9}).encode()
            + b"\n",
        )
    )
    errors = [json.loads(answer)["error"] for answer in answers]
    assert all(e and "\n" not in e for e in errors), errors
    assert "is not a session id" in errors[2]
    assert errors[-1] == "bad request: Input should be less than or equal to 4259840"
    assert asyncio.run(ask(b'{"op": "hello"}\n')) == [b'{"mode": "node", "record_exec": true}\n']
    assert uploads(site, 1, seconds=1) == []

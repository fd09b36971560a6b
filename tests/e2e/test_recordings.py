"""Recordings end to end: recorded on the node, streamed through the proxy, played back."""

import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from asciinema.asciicast import v2 as asciicast_v2

from tests.e2e.conftest import BIN, LOGIN, Site

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def jump(site: Site, *argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "jump"), *argv],
        input=stdin,
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def uploads(site: Site, count: int, seconds: float = 30) -> list[dict[str, Any]]:
    """``jump recordings ls`` once it lists ``count`` recordings, oldest first."""
    deadline = time.monotonic() + seconds
    while True:
        rows = list(site.admin.ok("jump", "recordings", "ls", "--format", "json").json())
        if len(rows) >= count or time.monotonic() > deadline:
            return rows[::-1]
        time.sleep(0.3)


def interactive(site: Site, typed: bytes) -> bytes:
    """A PTY session through ``jump ssh``; what the terminal showed."""
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [str(BIN / "jump"), "ssh", "web-1"],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**site.admin.env, "TERM": "xterm"},
        start_new_session=True,
    )
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
    process.wait(timeout=10)
    os.close(parent)
    return seen


def test_pty_and_exec_sessions_are_recorded_audited_and_played(site: Site, tmp_path: Path) -> None:
    done = jump(site, "ssh", "web-1", "echo recorded-exec-output; exit 4")
    assert (done.returncode, done.stdout) == (4, b"recorded-exec-output\n")
    seen = interactive(site, b"echo shell-$((6*7)); exit\n")
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

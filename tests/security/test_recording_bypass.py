"""Issue 14, hole 2: a command that only starts like ``scp -t``/``scp -f`` was taken for a file
transfer and not recorded, yet ran whole in the login's shell. Both commands the adversary
used must now be recorded sessions, with everything they printed in the recording."""

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Site, audit_events
from tests.e2e.test_recordings import jump, uploads

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _played(site: Site, session_id: str) -> bytes:
    played = jump(site, "play", session_id, "--format", "text")
    assert played.returncode == 0, played.stderr
    return played.stdout


def test_scp_followed_by_a_command_is_recorded_in_full(site: Site) -> None:
    hostname = Path("/etc/hostname").read_text().strip()
    done = site.ssh("scp -f /x; echo UNRECORDED; cat /etc/hostname", stdin=b"")
    assert b"UNRECORDED" in done.stdout, done.stderr
    [row] = uploads(site, 1)
    assert row["kind"] == "exec"
    recorded = _played(site, row["session_id"])
    assert b"UNRECORDED" in recorded
    assert hostname.encode() in recorded


def test_scp_then_an_interactive_shell_on_a_pty_is_recorded(site: Site) -> None:
    ssh = subprocess.Popen(
        ["ssh", "-F", str(site.ssh_config), "-tt", "web-1", "scp -t /tmp/none; exec bash -i"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert ssh.stdin is not None
    time.sleep(2)
    ssh.stdin.write(b"E\n")  # ends scp's sink; the shell reads the next line
    ssh.stdin.flush()
    time.sleep(1)
    ssh.stdin.write(b"echo SHELL-$((6*7)); exit\n")
    ssh.stdin.flush()
    # Keep stdin open until the shell has answered: its EOF would hang the terminal up.
    assert ssh.stdout is not None
    out = b""
    deadline = time.monotonic() + 30
    while b"SHELL-42" not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([ssh.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(ssh.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
    try:
        rest, err = ssh.communicate(timeout=30)
    finally:
        if ssh.poll() is None:
            ssh.kill()
    out += rest
    assert b"SHELL-42" in out, (out, err)
    [row] = uploads(site, 1)
    recorded = _played(site, row["session_id"])
    assert b"SHELL-42" in recorded


def test_a_bare_scp_transfer_still_works_and_is_audited_not_recorded(
    site: Site, tmp_path: Path
) -> None:
    """The legitimate transfer keeps working (OpenSSH's scp in legacy mode sends a bare
    ``scp -t -- DIR``, run as argv now); its audit event names the file."""
    source = tmp_path / "up.txt"
    source.write_bytes(b"payload\n" * 100)
    target = tmp_path / "down"
    target.mkdir()
    done = subprocess.run(
        ["scp", "-O", "-F", str(site.ssh_config), str(source), f"web-1:{target}"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "up.txt").read_bytes() == source.read_bytes()
    [event] = audit_events(site, "scp", 1)
    assert (event["action"], event["path"]) == ("upload", str(target / "up.txt"))
    assert uploads(site, 1, seconds=3) == []  # a transfer is audited, not recorded


def test_a_session_that_cannot_be_recorded_does_not_start(site: Site) -> None:
    """Recording mode ``node``: with the node's recording spool unwritable, a session is
    refused (one line, exit 255, audited) rather than run unrecorded."""
    spool = site.node.directory / "recordings"
    if spool.exists():
        shutil.rmtree(spool)
    spool.write_text("not a directory: recordings cannot be spooled here\n")
    done = jump(site, "ssh", "web-1", "echo RAN-UNRECORDED")
    assert done.returncode == 255, done
    assert b"RAN-UNRECORDED" not in done.stdout
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert "could not be recorded" in lines[0]
    refused = [e for e in audit_events(site, "session.start", 2) if e["origin"] == "node"]
    assert [(e["code"], e["recorded"]) for e in refused] == [("J2000E", False)]
    assert "could not be recorded" in refused[0]["error"]
    [executed] = audit_events(site, "exec", 1)
    assert (executed["command"], executed["exit_code"]) == ("echo RAN-UNRECORDED", 255)

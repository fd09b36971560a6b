"""A lock ends what is live on the node within 5 s, told in the lock's message (issue 17,
decision 0034): an interactive session, a live ``-L`` forward and an idle OpenSSH
ControlMaster connection of a locked user, through ``jump config``'s ssh_config, against a
running platform and a real node agent. The master can open no new session; a node lock
ends that node's sessions; lifting the lock lets the user back in.

The attack the issue reports: a ControlMaster connection ran new commands as root after its
user was locked, removed, or its certificate expired. Locks are written through the control
plane on the daemon's data dir, as ``test_access_at_proxy`` does.
"""

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jumpgate.protocol.resources import LockTarget
from tests.e2e.conftest import LOGIN, Site, audit_events
from tests.e2e.test_access_at_proxy import User, bob, plane_of
from tests.net.test_forwarding import fetch, web
from tests.support import free_port

pytestmark = pytest.mark.e2e
__all__ = ["web"]  # a fixture: a tiny HTTP server on 127.0.0.1

HOST = f"{LOGIN}@web-1.acme.localhost"
WITHIN = 5.0


@pytest.fixture
def control_dir() -> Iterator[Path]:
    short = Path(tempfile.mkdtemp(prefix="cm", dir="/tmp"))
    yield short
    for sock in short.iterdir():
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-S", str(sock), "-O", "exit", "x"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    shutil.rmtree(short, ignore_errors=True)


def _popen(user: User, *argv: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        ["ssh", "-F", str(user.config), "-o", "BatchMode=yes", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(check: Callable[[], bool], seconds: float) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        if check():
            return time.monotonic() - began
        time.sleep(0.1)
    return None


def _master_alive(user: User, sock: Path) -> bool:
    return user.openssh("-S", str(sock), "-O", "check", HOST).returncode == 0


def _live(user: User, control_dir: Path, web: int) -> tuple[list["subprocess.Popen[str]"], Path]:
    """An interactive session, a ``-L`` forward that carries, an idle master."""
    interactive = _popen(user, "-tt", HOST, "echo started; sleep 60")
    assert interactive.stdout is not None
    assert "started" in interactive.stdout.readline()
    port = free_port()
    forward = _popen(
        user, "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{port}:127.0.0.1:{web}", HOST
    )
    assert _until(lambda: _fetches(port), 20) is not None, "the -L forward never carried"
    sock = control_dir / "m"
    # Backgrounded, the master and its ProxyCommand keep their stderr: a file, not a pipe
    # that would never end.
    log = control_dir.parent / f"{control_dir.name}.log"
    with log.open("w") as err:
        master = subprocess.run(
            [
                *("ssh", "-F", str(user.config), "-o", "BatchMode=yes", "-M", "-S", str(sock)),
                *("-fN", "-o", "ControlPersist=no", HOST),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=60,
            check=False,
        )
    assert master.returncode == 0, log.read_text()
    assert _master_alive(user, sock)
    assert user.openssh("-S", str(sock), HOST, "echo via-master").stdout == "via-master\n"
    return [interactive, forward], sock


def _fetches(port: int) -> bool:
    try:
        return fetch(port, "/x").startswith("hello")
    except OSError:
        return False


def _ended(processes: list["subprocess.Popen[str]"]) -> list[str]:
    """Each process's stderr once it has ended (killed if still running after ``WITHIN``)."""
    errs = []
    for process in processes:
        try:
            _, err = process.communicate(timeout=WITHIN)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            err = f"STILL RUNNING after {WITHIN} s: {err}"
        errs.append(err)
    return errs


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (LockTarget(user="bob"), "user 'bob' is locked (incident 9): ask a tenant admin"),
        (LockTarget(node="web-1"), "node 'web-1' is locked (incident 9): ask a tenant admin"),
    ],
    ids=["user-lock", "node-lock"],
)
def test_a_lock_ends_a_session_a_forward_and_a_controlmaster_within_5_s(
    site: Site, tmp_path: Path, control_dir: Path, web: int, target: LockTarget, message: str
) -> None:
    user = bob(site, tmp_path)
    processes, sock = _live(user, control_dir, web)
    try:
        with plane_of(site) as plane:
            lock = plane.locks.create("acme", target, message="incident 9")
        locked = time.monotonic()
        interactive_err, forward_err = _ended(processes)
        master_gone = _until(lambda: not _master_alive(user, sock), WITHIN)
        took = time.monotonic() - locked
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert message in interactive_err, interactive_err
    assert message in forward_err, forward_err  # the node's SSH disconnect carries it
    assert master_gone is not None, "the ControlMaster outlived the lock"
    assert took < WITHIN + 1.0
    again = user.openssh("-S", str(sock), HOST, "echo via-master")
    assert (again.returncode, again.stdout) == (255, ""), again.stderr
    assert message in again.stderr  # no master: a new connection, refused
    ends = [
        e
        for e in audit_events(site, "session.end", 3)
        if e.get("origin") != "proxy" and e.get("reason")
    ]
    assert message in {e["reason"] for e in ends}, ends
    with plane_of(site) as plane:
        plane.locks.remove("acme", lock.name)
    # The node hears of it with the proxy's next reading (each second): back within 5 s.
    back = _until(lambda: user.openssh(HOST, "echo back").stdout == "back\n", WITHIN)
    assert back is not None, user.openssh(HOST, "echo back").stderr

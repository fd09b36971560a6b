"""Plain OpenSSH through the proxy to node web-1 gets a session set up as sshd sets one up:
sshd's variables, the client's ``SendEnv``/``SetEnv`` variables the node accepts, a login
record in the machine's utmp while a PTY session runs, and PAM's account and session stages
when the node's config enables them (a PAM service of the test's in /etc/pam.d)."""

import os
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import LOGIN, Site

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.net,
    pytest.mark.skipif(os.geteuid() != 0, reason="utmp and PAM sessions need root, as sshd"),
]

UTMP = Path("/var/run/utmp")


def _vars(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.replace("\r", "").splitlines() if "=" in line)


@pytest.fixture
def utmp() -> Iterator[Path]:
    """The machine's utmp. A container without an init has none, and the node (as sshd)
    does not create it: then the test makes it (root:utmp 664, as Debian's init does) and
    removes it after."""
    made = not UTMP.exists()
    if made:
        UTMP.touch(mode=0o664)
    try:
        yield UTMP
    finally:
        if made:
            UTMP.unlink()


def test_openssh_through_the_proxy_gets_sshds_session_setup(site: Site, utmp: Path) -> None:
    exec_session = site.ssh(
        "-o", "SendEnv=LANG LC_*", "-o", "SetEnv=LC_TIME=C.UTF-8 LD_PRELOAD=/tmp/evil.so", "env"
    )  # fmt: skip
    assert exec_session.returncode == 0, exec_session.stderr
    env = _vars(exec_session.stdout.decode())
    # the address is the one the node sees until the proxy passes the user's (session_env.origin)
    assert re.fullmatch(r"\S+ \d+ \S+ \d+", env["SSH_CONNECTION"]), env["SSH_CONNECTION"]
    client_host, client_port, _, server_port = env["SSH_CONNECTION"].split()
    assert env["SSH_CLIENT"] == f"{client_host} {client_port} {server_port}"
    assert env["MAIL"] == f"/var/mail/{LOGIN}"
    assert env["LC_TIME"] == "C.UTF-8"
    assert "LD_PRELOAD" not in env
    assert "SSH_TTY" not in env

    pty_session = site.ssh("-tt", f"echo SSH_TTY=$SSH_TTY; echo TERM=$TERM; who {utmp}")
    assert pty_session.returncode == 0, pty_session.stderr
    out = pty_session.stdout.decode().replace("\r", "")
    tty = _vars(out)["SSH_TTY"]
    assert tty.startswith("/dev/pts/")
    assert "TERM" in _vars(out)
    line = tty.removeprefix("/dev/")
    assert re.search(rf"^{LOGIN} +{line} ", out, re.MULTILINE), out
    # once the session has ended, its line is no longer logged in
    assert not re.search(rf" {line} ", (site.ssh(f"who {utmp}").stdout.decode())), "still in utmp"


@pytest.fixture
def pam_services(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """Two PAM services in /etc/pam.d (removed after): one whose session stage sets a
    variable (pam_env) and logs each stage (pam_exec), one whose account stage refuses
    (pam_deny); and the log."""
    name = f"jumpgate-test-{secrets.token_hex(4)}"
    log = tmp_path / "stages"
    (tmp_path / "pam_env").write_text("JG_FROM_PAM=yes\n")
    hook = tmp_path / "hook"
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER" >> {log}\n')
    hook.chmod(0o755)
    session, deny = Path(f"/etc/pam.d/{name}"), Path(f"/etc/pam.d/{name}-deny")
    session.write_text(
        "account required pam_permit.so\n"
        f"session required pam_env.so readenv=1 envfile={tmp_path}/pam_env conffile=/dev/null\n"
        f"session required pam_exec.so {hook}\n"
    )
    deny.write_text("account required pam_deny.so\nsession required pam_permit.so\n")
    try:
        yield session.name, deny.name, log
    finally:
        session.unlink()
        deny.unlink()


def _node_with(site: Site, tmp_path: Path, config: str) -> None:
    """Restart web-1 with ``config`` as its jumpgate.yaml."""
    path = tmp_path / f"node-{secrets.token_hex(2)}.yaml"
    path.write_text(config)
    site.node.kill(signal.SIGTERM)
    site.node.restart("-c", str(path))
    site.node.wait_tunnel()


@pytest.mark.timeout(240)  # two restarts of the node, on a loaded machine
def test_the_node_runs_pam_when_its_config_says(
    site: Site, tmp_path: Path, pam_services: tuple[str, str, Path]
) -> None:
    service, deny, log = pam_services
    _node_with(site, tmp_path, f"pam: {{enabled: true, service_name: {service}}}\n")
    ran = site.ssh(f"echo JG_FROM_PAM=$JG_FROM_PAM; cat {log}")
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout.decode()
    assert _vars(out)["JG_FROM_PAM"] == "yes"
    assert f"open_session {LOGIN}" in out  # opened before the command
    assert log.read_text().splitlines() == [f"open_session {LOGIN}", f"close_session {LOGIN}"]

    _node_with(site, tmp_path, f"pam:\n  enabled: true\n  service_name: {deny}\n")
    refused = site.ssh(f"touch {tmp_path}/ran")
    assert refused.returncode != 0
    assert not (tmp_path / "ran").exists()
    assert (
        f"jumpgate: session refused: PAM (service '{deny}') refused login '{LOGIN}'"
        in refused.stderr.decode()
    )

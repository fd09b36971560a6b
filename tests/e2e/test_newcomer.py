"""What a newcomer hit (issue 16, item 8): each bad input answered in one line saying what to
do, and the small commands a person tries first (``--version``, ``logout`` twice)."""

import os
import pty
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from jumpgate.protocol.tunnel_messages import PROTOCOL_VERSIONS
from jumpgate.protocol.version import PROTOCOL_VERSION, server_version
from tests.e2e.conftest import (
    BIN,
    PASSWORD,
    Cluster,
    Shell,
    Site,
    create_tenant,
    signup_and_login,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e


def _admin(cluster: Cluster, tmp_path: Path) -> Shell:
    shell = Shell(tmp_path / "home")
    created = create_tenant(shell, cluster, "acme", "alice")
    signup_and_login(shell, cluster, created["invite_token"], "alice")
    return shell


def test_refused_values_are_said_in_words(cluster: Cluster, tmp_path: Path) -> None:
    shell = _admin(cluster, tmp_path)
    login = ["jump", "login", f"--proxy={cluster.proxy}", "--insecure", "--user", "alice"]
    cases = [
        (
            [*login, "--password-stdin", "--otp", "1"],
            "jump: error: otp: must be the 6 digits your authenticator app shows, not '1'",
        ),
        (
            ["jumpctl", "nodes", "add", "--ttl", "1000d"],
            "jumpctl: error: ttl_seconds: must be from 1m to 30d, not 1000d",
        ),
        (
            ["jumpctl", "nodes", "add", "--token", "short"],
            "jumpctl: error: token: must be 16 to 256 letters, digits, '-' or '_' (5 given)",
        ),
        (
            ["jumpctl", "tokens", "add", "--type=node", "--value", "not a token!"],
            "jumpctl: error: token: must be 16 to 256 letters, digits, '-' or '_' (12 given)",
        ),
    ]
    for argv, message in cases:
        assert shell.fails(*argv, stdin=PASSWORD + "\n") == message


def _on_a_terminal(argv: list[str], env: dict[str, str], typed: list[bytes]) -> tuple[int, str]:
    """``argv`` on a new PTY, each of ``typed`` written once the terminal shows a prompt
    (a line ending in ': '); its exit status and what the terminal showed. Killed after 30 s
    if it is still asking."""
    parent, child = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=child, stdout=child, stderr=child, env=env, start_new_session=True
    )
    os.close(child)
    seen = b""
    answered = 0
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([parent], [], [], 0.2)
        if ready:
            try:
                seen += os.read(parent, 4096)
            except OSError:
                break
        if answered < len(typed) and seen.count(b": ") > answered:
            os.write(parent, typed[answered])
            answered += 1
    if process.poll() is None:  # still asking: what it showed says what
        process.kill()
    status = process.wait(timeout=10)
    try:
        while select.select([parent], [], [], 0.2)[0]:
            seen += os.read(parent, 4096)
    except OSError:
        pass
    os.close(parent)
    return status, seen.decode(errors="replace")


def test_signup_checks_the_password_before_asking_for_it_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    shell = Shell(tmp_path / "home")
    created = create_tenant(shell, cluster, "acme", "alice")
    argv = [str(BIN / "jump"), "signup", f"--proxy={cluster.proxy}", "--insecure"]
    status, shown = _on_a_terminal([*argv, created["invite_token"]], shell.env, [b"short\n"])
    assert status == 1, shown
    assert "Password again" not in shown
    assert shown.strip().splitlines()[-1] == (
        "jump: error: the password must be 12 to 128 characters (5 given): run jump signup again"
    )


def test_versions(tmp_path: Path) -> None:
    shell = Shell(tmp_path / "home")
    line = f"{server_version()} (protocol {PROTOCOL_VERSION}, tunnel protocol "
    line += ",".join(str(v) for v in PROTOCOL_VERSIONS) + ")\n"
    for program in ("jump", "jumpctl", "jumpgate"):
        for argv in (["version"], ["--version"]):
            assert shell.ok(program, *argv).out == f"{program} {line}", (program, argv)
    assert shell.ok("jump", "version", "--format", "json").json() == {
        "version": server_version(),
        "protocol": PROTOCOL_VERSION,
        "tunnel_protocols": list(PROTOCOL_VERSIONS),
    }


def test_logout_when_logged_out_is_no_error(tmp_path: Path) -> None:
    shell = Shell(tmp_path / "home")
    result = shell.ok("jump", "logout")
    assert result.out == "Not logged in: nothing to log out.\n"


def test_the_cluster_address_may_be_given_as_a_url(cluster: Cluster, tmp_path: Path) -> None:
    shell = Shell(tmp_path / "home")
    created = create_tenant(shell, cluster, "acme", "alice")
    url = f"https://{cluster.proxy}/"
    shell.ok(
        "jump",
        "signup",
        f"--proxy={url}",
        "--insecure",
        "--password-stdin",
        created["invite_token"],
        stdin=PASSWORD + "\n",
    )
    assert shell.fails("jump", "login", f"--proxy=http://{cluster.proxy}", "--insecure") == (
        f"jump: error: --proxy: the platform speaks HTTPS only: give {cluster.proxy} "
        f"(or https://{cluster.proxy})"
    )
    assert shell.fails("jump", "login", f"--proxy=https://{cluster.proxy}/v1", "--insecure") == (
        f"jump: error: --proxy: give the cluster's address alone, {cluster.proxy}, not a path"
    )
    status = shell.fails("jumpctl", f"--auth-server=ftp://{cluster.proxy}", "status")
    assert status == (
        f"jumpctl: error: --auth-server: the platform speaks HTTPS only: give {cluster.proxy} "
        f"(or https://{cluster.proxy})"
    )


def test_tokens_ls_says_system_roles(cluster: Cluster, tmp_path: Path) -> None:
    shell = _admin(cluster, tmp_path)
    shell.ok("jumpctl", "tokens", "add", "--type=node")
    header = shell.ok("jumpctl", "tokens", "ls").out.splitlines()[0]
    assert header.split("  ")[0:1] == ["Token"]
    assert "System roles" in header
    assert " Roles" not in header.replace("System roles", "")


def _start_fails(tmp_path: Path, *flags: str, command: str = "start") -> tuple[int, str]:
    done = subprocess.run(
        [str(BIN / "jumpgate"), command, "--data-dir", str(tmp_path / "data"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return done.returncode, lines[0]


def test_services_and_roles_together_are_refused(tmp_path: Path) -> None:
    code, line = _start_fails(tmp_path, "--services=auth,proxy", "--roles=auth,proxy")
    assert code == 2
    assert line == (
        "jumpgate start: error: --roles: renamed --services (decision 0026): give only "
        "--services (see jumpgate start --help)"
    )


def test_listen_addresses_are_checked_before_anything_starts(tmp_path: Path) -> None:
    free = ["--web-listen-addr", "127.0.0.1:0", "--tunnel-listen-addr", "127.0.0.1:0"]
    no_port = _start_fails(tmp_path, *free, "--ssh-listen-addr", "127.0.0.1")[1]
    assert no_port == (
        "jumpgate: error: ssh_listen_addr: '127.0.0.1' has no port: use HOST:PORT "
        "(port 0: any free port)"
    )
    bad = [
        ("999.1.1.1:22", "999.1.1.1 does not resolve"),
        ("nosuch.invalid:4023", "nosuch.invalid does not resolve"),
        ("192.0.2.1:4023", "192.0.2.1 is no address of this host"),
    ]
    for address, why in bad:
        line = _start_fails(tmp_path, *free, "--ssh-listen-addr", address)[1]
        assert line.startswith(
            f"jumpgate: error: ssh_listen_addr: cannot listen on {address}: {why}"
        ), line
        assert "stop what uses" not in line
    assert not (tmp_path / "data").exists()  # refused before any state was made
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ssh = ["--ssh-listen-addr", f"127.0.0.1:{free_port()}"]
        line = _start_fails(
            tmp_path,
            *ssh,
            "--tunnel-listen-addr",
            "127.0.0.1:0",
            "--web-listen-addr",
            f"127.0.0.1:{port}",
        )[1]
        assert line == (
            f"jumpgate: error: web_listen_addr: 127.0.0.1:{port} is in use: stop what uses "
            "it or choose another port (--web-listen-addr)"
        )
        # make up runs jumpgate demo: it says how to give make up other ports
        ports = ["--ssh-listen-addr", "127.0.0.1:3023", "--tunnel-listen-addr", "127.0.0.1:3024"]
        demo = _start_fails(
            tmp_path, *ports, "--web-listen-addr", f"127.0.0.1:{port}", command="demo"
        )[1]
        assert (
            demo.endswith(
                f"(--web-listen-addr); with make up: make up WEB_PORT={port + 1000} "
                "SSH_PORT=4023 TUNNEL_PORT=4024"
            )
            or port + 1000 >= 64535
        ), demo


def test_a_removed_node_started_again_with_a_new_token_says_what_to_do(site: Site) -> None:
    """Its stored identity is what it joins with, whatever the token: it stops at once with
    one line (delete the identity, join again) instead of looping on 'Permission denied'."""
    site.admin.ok("jumpctl", "nodes", "rm", "web-1")
    site.node.kill(signal.SIGTERM)
    joining = site.admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    site.node.env = dict(joining["env"])
    process = site.node.start()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running: {site.node.log.read_text()[-2000:]}")
    assert process.returncode == 1
    said = site.node.log.read_text()[site.node.offset :].strip().splitlines()[-1]
    identity = site.node.directory / "node"
    assert said.startswith("jumpgate: error: this node's identity was removed from cluster acme")
    assert said.endswith(
        f": delete {identity} and join again (jumpctl nodes add); the token was not used"
    )


def test_a_node_whose_diagnostics_port_is_taken_says_so_in_one_line(tmp_path: Path) -> None:
    """``jumpgate start --services=node --diag-addr`` on a port in use printed a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, line = _start_fails(
            tmp_path,
            "--services=node",
            "--auth-server=acme.localhost:1",
            "--token=abc",
            "--ca-pin=sha256:" + "a" * 64,
            "--diag-addr",
            f"127.0.0.1:{port}",
        )
    assert code == 1
    assert line == (
        f"jumpgate: error: diag_addr: 127.0.0.1:{port} is in use: stop what uses it or choose "
        "another port (--diag-addr)"
    )
    assert not list(tmp_path.rglob("identity.json"))  # it joined nothing


def test_a_second_platform_on_a_data_dir_in_use_is_refused_in_one_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A newcomer whose ports were taken ran ``make up`` again on other ports, with the same
    data dir: a second platform started on the first one's state, and its node moved to it
    (the first then showed the node offline)."""
    ports = ["--web-listen-addr", "127.0.0.1:0", "--ssh-listen-addr", "127.0.0.1:0"]
    ports += ["--tunnel-listen-addr", "127.0.0.1:0"]
    assert cluster.process is not None
    for command in ("start", "demo"):
        done = subprocess.run(
            [str(BIN / "jumpgate"), command, "--data-dir", str(cluster.data_dir), *ports],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(
            f"jumpgate: error: data dir {cluster.data_dir} is in use by another jumpgate "
            f"(pid {cluster.process.pid}): stop it (Ctrl-C where it runs), or give another "
            "--data-dir"
        ), line
    assert "platform started" not in cluster.log.read_text().split("platform started", 1)[1]
    assert cluster.process.poll() is None  # the first runs on

"""Port and agent forwarding to a node through the proxy: OpenSSH with ``jump config``'s
route, and ``jump ssh``, as a user would run them (the node is this machine, so its loopback
is ours)."""

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, LOGIN, Shell, Site, audit_events
from tests.net.test_forwarding import (
    SECONDS,
    Background,
    agent,  # noqa: F401 - a fixture
    fetch,
    socks5_fetch,
    wait_listening,
    web,  # noqa: F401 - a fixture
)
from tests.support import free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def openssh(site: Site, *options: str, command: str | None = None) -> list[str]:
    return ["ssh", "-F", str(site.ssh_config), "-o", "ExitOnForwardFailure=yes", *options,
            "web-1", *([command] if command else [])]  # fmt: skip


def jump(*argv: str) -> list[str]:
    return [str(BIN / "jump"), "ssh", *argv]


def _forwards_work(server: int, local: int, socks: int, remote: int) -> None:
    wait_listening(local)
    wait_listening(socks)
    wait_listening(remote)
    assert fetch(local, "/L") == "hello from /L"
    assert socks5_fetch(socks, server, "/D") == "hello from /D"
    assert fetch(remote, "/R") == "hello from /R"


def test_openssh_forwards_ports_through_the_proxy_and_each_is_audited(
    site: Site,
    web: int,  # noqa: F811 - the fixture
) -> None:
    local, socks, remote = free_ports(3)
    forwards = ["-L", f"{local}:127.0.0.1:{web}", "-D", str(socks)]
    forwards += ["-R", f"{remote}:127.0.0.1:{web}"]
    with Background(openssh(site, "-N", *forwards)):
        _forwards_work(web, local, socks, remote)
    events = audit_events(site, "port", 4)
    seen = {(e["forward"], e["action"], e["addr"]) for e in events}
    assert ("local", "open", f"127.0.0.1:{web}") in seen
    assert ("local", "open", f"localhost:{web}") in seen  # -D: the name the SOCKS client gave
    assert ("remote", "listen", f"127.0.0.1:{remote}") in seen
    assert ("remote", "accept", f"localhost:{remote}") in seen
    assert {(e["user"], e["login"], e["code"]) for e in events} == {("alice", LOGIN, "J3003I")}
    assert len({e["connection_id"] for e in events}) == 1
    # Each forward names the proxy's session it came through, and the user's address
    starts = audit_events(site, "session.start", 1)
    proxy_ids = {e["session_id"] for e in starts if e.get("origin") == "proxy"}
    assert {e["session_id"] for e in events} <= proxy_ids, (events, starts)
    assert all(e.get("remote_addr", "").startswith("127.0.0.1:") for e in events), events


def test_jump_ssh_forwards_ports_with_ssh_s_options(
    site: Site,
    web: int,  # noqa: F811 - the fixture
) -> None:
    local, socks, remote = free_ports(3)
    argv = jump("-N", "-L", f"{local}:127.0.0.1:{web}", "-D", str(socks))
    argv += ["-R", f"127.0.0.1:{remote}:localhost:{web}", "web-1"]
    with Background(argv, env=site.admin.env) as running:
        _forwards_work(web, local, socks, remote)
        assert running.process.poll() is None  # -N: no command, forwarding until stopped
    assert running.process.returncode == 255  # stopped by SIGTERM, as ssh(1)
    # A port the node cannot listen on (taken) is one line, and jump ssh ends
    line = site.admin.fails("jump", "ssh", "-N", "-R", f"127.0.0.1:{web}:localhost:1", "web-1")
    assert f"the node refused -R 127.0.0.1:{web}:localhost:1" in line


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-L", "8080", "web-1"], "bad -L '8080' (three or four fields)"),
        (["-D", "socks", "web-1"], "bad -D 'socks'"),
        (["-R", "1:2", "web-1"], "bad -R '1:2'"),
        (["-N", "web-1", "uptime"], "-N runs no command"),
    ],
    ids=["L", "D", "R", "N-with-command"],
)
def test_jump_ssh_says_in_one_line_what_is_wrong_with_a_forward(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    line = Shell(tmp_path / "home").fails("jump", "ssh", *argv)
    assert says in line


def test_agent_forwarding_with_openssh_and_jump_ssh(
    site: Site,
    agent: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    script = 'stat -c "%U %a" "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l'
    for argv, env in (
        (openssh(site, "-A", command=script), agent),
        (jump("-A", "web-1", script), {**agent, **site.admin.env}),
    ):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=SECONDS)
        assert done.returncode == 0, done.stderr
        owner, listed = done.stdout.splitlines()
        assert owner == f"{LOGIN} 700"
        assert "forwarded-key" in listed
    # Without -A the session has no agent
    without = subprocess.run(
        openssh(site, command='echo "[$SSH_AUTH_SOCK]"'), capture_output=True, text=True, env=agent
    )
    assert without.stdout.strip() == "[]"

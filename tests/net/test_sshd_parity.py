"""The node is a faithful sshd: the same OpenSSH-client cases against Debian's sshd and a node.

Every case runs twice, ``[sshd]`` then ``[jumpgate]`` (``sshd_parity.Target``), and asserts
one expected result on both: what Debian's sshd does is the reference (its run checks that
the expectation is sshd's behaviour), so a difference shows as a failing ``[jumpgate]`` case.
Where the two must differ (the node's view of its own address), the assertion normalises
and decision 0033 names the difference. The run ends with a count of cases and differences
(``tests/net/parity_report.py``).

One platform (tenant acme, its admin logged in, node web-1) and one sshd serve the whole
module; the cases are grouped on one xdist worker so they are built once.
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, LOGIN, Site, build_site, running_cluster
from tests.net.sshd_parity import (
    SFTP_SERVER,
    Ran,
    Target,
    curl,
    http_server,
    jumpgate_target,
    node_without_sftp_server,
    running_sshd,
    ssh_agent,
    stop,
)
from tests.support import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.net,
    pytest.mark.sshd_parity,
    pytest.mark.xdist_group("sshd-parity"),  # one worker builds the module's platform once
]

NO_SUCH = b"ls: cannot access '/nonexistent': No such file or directory\n"


@pytest.fixture(scope="module")
def parity_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("parity-site")
    with running_cluster(directory) as cluster:
        site = build_site(cluster, directory)
        # The node runs Debian's sshd PAM stack, as the sshd it is compared with does
        # (UsePAM yes): pam_env's locale, pam_motd, pam_mail's noenv, pam_limits...
        config = directory / "node-pam.yaml"
        config.write_text("pam: {enabled: true, service_name: sshd}\n")
        site.node.kill(signal.SIGTERM)
        site.node.restart("-c", str(config))
        site.node.wait_tunnel()
        try:
            yield site
        finally:
            if site.node.process is not None and site.node.process.poll() is None:
                site.node.kill(15)


@pytest.fixture(scope="module")
def sshd_target(parity_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running_sshd(parity_site, tmp_path_factory.mktemp("sshd")) as target:
        yield target


@pytest.fixture(scope="module")
def jumpgate_target_(parity_site: Site, tmp_path_factory: pytest.TempPathFactory) -> Target:
    return jumpgate_target(parity_site, tmp_path_factory.mktemp("jumpgate"))


@pytest.fixture(params=["sshd", "jumpgate"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each server in turn; a case that fails on ``[jumpgate]`` only is a difference."""
    name = "sshd_target" if request.param == "sshd" else "jumpgate_target_"
    chosen: Target = request.getfixturevalue(name)
    return chosen


def expect(target: Target, ran: Ran, code: int, out: bytes | None, err: bytes | None) -> None:
    """``ran`` ended with ``code`` and printed exactly ``out`` / ``err`` (None: not checked)."""
    seen = (ran.code, ran.out if out is not None else None, ran.err if err is not None else None)
    assert seen == (code, out, err), f"{target.name}: {ran.text()}"


def test_short_failing_commands_keep_stderr_and_status_20_times(target: Target) -> None:
    """20 connections, 4 at a time (the case is about each one, not about their order)."""
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: target.ssh("ls /nonexistent"), range(20)))
    wrong = [f"#{n}: {ran.text()}" for n, ran in enumerate(runs) if ran != Ran(2, b"", NO_SUCH)]
    assert not wrong, f"{target.name}: {len(wrong)} of 20 differ: {wrong[0]}"


def test_exit_codes_and_both_streams_over_one_controlmaster_12_times(target: Target) -> None:
    control = Path(tempfile.mkdtemp(prefix="jg-cm-")) / "master"
    master = ["-o", f"ControlPath={control}"]
    started = target.run(
        [
            "ssh",
            "-F",
            str(target.config),
            *master,
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=30",
            "-fN",
            target.destination,
        ],
        timeout=30,
    )
    try:
        assert started.code == 0, started.text()
        wrong = []
        for n in range(12):
            command = f"echo out-{n}; echo err-{n} >&2; exit {n}"
            ran = target.ssh(command, *master, "-o", "ControlMaster=no")
            if ran != Ran(n, f"out-{n}\n".encode(), f"err-{n}\n".encode()):
                wrong.append(f"#{n}: {ran.text()}")
        assert not wrong, f"{target.name}: {len(wrong)} of 12 differ: {'; '.join(wrong[:3])}"
    finally:
        target.ssh("true", *master, "-O", "exit")
        shutil.rmtree(control.parent, ignore_errors=True)


def test_tty_with_stdin_at_eof_prints_everything(target: Target) -> None:
    ran = target.ssh("echo hi; sleep 0.2; echo there", "-tt")
    expect(target, ran, 0, b"hi\r\nthere\r\n", b"")


def test_a_command_killed_by_a_signal(target: Target) -> None:
    ran = target.ssh("kill -TERM $$")
    expect(target, ran, 255, b"", b"")


def test_local_forward_fetches_over_http(target: Target, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("through -L\n")
    local = free_port()
    with http_server(tmp_path) as port:
        forward = target.popen(
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            f"{local}:127.0.0.1:{port}",
            stderr=subprocess.PIPE,
        )
        try:
            fetched = curl(f"http://127.0.0.1:{local}/hello.txt")
        finally:
            err = stop(forward)
    assert (fetched.returncode, fetched.stdout) == (0, b"through -L\n"), (
        f"{target.name}: curl {fetched.returncode} {fetched.stderr!r}, ssh said {err!r}"
    )


def test_remote_forward_fetches_over_http(target: Target, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("through -R\n")
    remote = free_port()
    with http_server(tmp_path) as port:
        ran = target.ssh(
            f"curl -sS --max-time 10 http://127.0.0.1:{remote}/hello.txt",
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            f"{remote}:127.0.0.1:{port}",
        )
    expect(target, ran, 0, b"through -R\n", b"")


def test_dynamic_forward_fetches_over_socks(target: Target, tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("through -D\n")
    local = free_port()
    with http_server(tmp_path) as port:
        forward = target.popen(
            "-N", "-o", "ExitOnForwardFailure=yes", "-D", str(local), stderr=subprocess.PIPE
        )
        try:
            fetched = curl(
                "--socks5-hostname", f"127.0.0.1:{local}", f"http://127.0.0.1:{port}/hello.txt"
            )
        finally:
            err = stop(forward)
    assert (fetched.returncode, fetched.stdout) == (0, b"through -D\n"), (
        f"{target.name}: curl {fetched.returncode} {fetched.stderr!r}, ssh said {err!r}"
    )


def test_agent_forwarding_lists_the_agents_key(target: Target, tmp_path: Path) -> None:
    with ssh_agent(tmp_path) as (agent, listed):
        ran = target.ssh("ssh-add -l", "-A", env={"SSH_AUTH_SOCK": agent})
    expect(target, ran, 0, listed.encode(), b"")


def _sftp_batch(target: Target, local: Path, remote: Path) -> Ran:
    (local / "a.txt").write_bytes(b"sftp payload\n" * 1000)
    batch = local / "batch"
    batch.write_text(
        textwrap.dedent(
            f"""\
            mkdir {remote}/d
            put {local}/a.txt {remote}/d/a.txt
            rename {remote}/d/a.txt {remote}/d/b.txt
            get {remote}/d/b.txt {local}/back.txt
            ls {remote}/d
            rm {remote}/d/b.txt
            rmdir {remote}/d
            """
        )
    )
    return target.run(["sftp", "-F", str(target.config), "-b", str(batch), target.destination])


def _check_sftp(target: Target, ran: Ran, local: Path, remote: Path) -> None:
    assert (ran.code, ran.err) == (0, b""), f"{target.name}: {ran.text()}"
    assert (local / "back.txt").read_bytes() == (local / "a.txt").read_bytes()
    assert f"{remote}/d/b.txt".encode() in ran.out, ran.text()
    assert list(remote.iterdir()) == []


def test_sftp_batch_put_get_rename_rm_mkdir(target: Target, tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    _check_sftp(target, _sftp_batch(target, local, remote), local, remote)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(root.rglob("*"))
    }


def _make_tree(root: Path) -> None:
    for d in ("a", "a/b", "c"):
        (root / d).mkdir(parents=True)
    for n, d in enumerate(("", "a", "a/b", "c")):
        (root / d / f"f{n}.bin").write_bytes(os.urandom(1000 * (n + 1)))
    (root / "c" / "empty").write_bytes(b"")


@pytest.mark.parametrize("protocol", [[], ["-O"]], ids=["scp-sftp", "scp-O"])
def test_scp_recursive_both_ways(target: Target, tmp_path: Path, protocol: list[str]) -> None:
    source, remote, back = tmp_path / "tree", tmp_path / "remote", tmp_path / "back"
    _make_tree(source)
    remote.mkdir()
    scp = ["scp", "-F", str(target.config), *protocol, "-r", "-q"]
    up = target.run([*scp, str(source), target.remote(remote)])
    assert (up.code, up.err) == (0, b""), f"{target.name}: {up.text()}"
    down = target.run([*scp, target.remote(remote / "tree"), str(back)])
    assert (down.code, down.err) == (0, b""), f"{target.name}: {down.text()}"
    assert _tree(remote / "tree") == _tree(source)
    assert _tree(back) == _tree(source)


def test_rsync_1000_files_then_an_incremental_no_op(target: Target, tmp_path: Path) -> None:
    source, remote = tmp_path / "src", tmp_path / "dst"
    for n in range(1000):
        path = source / f"d{n % 10}" / f"f{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {n}\n")
    rsync = ["rsync", "-a", "-e", target.ssh_command]
    first = target.run([*rsync, f"{source}/", target.remote(f"{remote}/")], timeout=120)
    assert (first.code, first.err) == (0, b""), f"{target.name}: {first.text()}"
    assert _tree(remote) == _tree(source)
    again = target.run([*rsync, "--itemize-changes", f"{source}/", target.remote(f"{remote}/")])
    expect(target, again, 0, b"", b"")


def test_git_clone_and_push_over_ssh(target: Target, tmp_path: Path) -> None:
    name = f"jumpgate-parity-{os.getpid()}-{target.name}.git"
    bare = Path(pwd.getpwnam(LOGIN).pw_dir) / name  # the clone names it relative to the home
    git_env = {
        "GIT_SSH_COMMAND": target.ssh_command,
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Parity",
        "GIT_AUTHOR_EMAIL": "parity@example.test",
        "GIT_COMMITTER_NAME": "Parity",
        "GIT_COMMITTER_EMAIL": "parity@example.test",
    }

    def git(*argv: str, cwd: Path = tmp_path) -> Ran:
        ran = target.run(["git", *argv], env=git_env, cwd=cwd)
        assert ran.code == 0, f"{target.name}: git {argv}: {ran.text()}"
        return ran

    try:
        git("init", "-q", "--bare", "-b", "main", str(bare))
        seed = tmp_path / "seed"
        git("init", "-q", "-b", "main", str(seed))
        (seed / "README").write_text("seed\n")
        git("add", "README", cwd=seed)
        git("commit", "-q", "-m", "seed", cwd=seed)
        git("push", "-q", str(bare), "main", cwd=seed)
        clone = tmp_path / "clone"
        git("clone", "-q", target.remote(name), str(clone))
        assert (clone / "README").read_text() == "seed\n"
        (clone / "pushed").write_text("over ssh\n")
        git("add", "pushed", cwd=clone)
        git("commit", "-q", "-m", "pushed over ssh", cwd=clone)
        pushed = git("push", "-q", "origin", "main", cwd=clone)
        assert pushed.err == b"", pushed.text()
        log = git("--git-dir", str(bare), "log", "--format=%s", "main")
        assert log.out == b"pushed over ssh\nseed\n"
    finally:
        shutil.rmtree(bare, ignore_errors=True)


ADDRESS = r"(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f:]+)"
PORT = r"(\d{1,5})"


def test_ssh_connection_and_ssh_client_have_sshds_shape(target: Target) -> None:
    """``client-address client-port server-address server-port`` and ``client-address
    client-port server-port``: the client side must be the client's (127.0.0.1 here); the
    server's side is the node's own view (decision 0033), so only its shape is compared."""
    ran = target.ssh('echo "$SSH_CONNECTION"; echo "$SSH_CLIENT"; echo "${SSH_TTY-unset}"')
    assert ran.code == 0, ran.text()
    lines = ran.out.decode().splitlines()
    assert len(lines) == 3, ran.text()
    connection = re.fullmatch(f"{ADDRESS} {PORT} {ADDRESS} {PORT}", lines[0])
    client = re.fullmatch(f"{ADDRESS} {PORT} {PORT}", lines[1])
    assert connection is not None, f"{target.name}: SSH_CONNECTION={lines[0]!r}"
    assert client is not None, f"{target.name}: SSH_CLIENT={lines[1]!r}"
    assert connection.group(1) == "127.0.0.1", f"{target.name}: {lines[0]!r}"
    assert client.groups() == (connection.group(1), connection.group(2), connection.group(4))
    assert lines[2] == "unset", f"{target.name}: SSH_TTY without a tty: {lines[2]!r}"


def test_ssh_tty_names_the_sessions_terminal(target: Target) -> None:
    ran = target.ssh('echo "${SSH_TTY-unset}"; tty', "-tt")
    assert ran.code == 0, ran.text()
    lines = ran.out.decode().splitlines()
    assert len(lines) == 2, ran.text()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), f"{target.name}: SSH_TTY={lines[0]!r}"
    assert lines[0] == lines[1], f"{target.name}: SSH_TTY {lines[0]!r} but tty says {lines[1]!r}"


def test_sendenv_lang_and_lc_pass_setenv_of_others_does_not(target: Target) -> None:
    ran = target.ssh(
        'echo "${LANG-unset}|${LC_PARITY-unset}|${PARITY_REFUSED-unset}"',
        "-o",
        "SendEnv=LANG LC_*",
        "-o",
        "SetEnv=PARITY_REFUSED=yes",
        env={"LANG": "C", "LC_PARITY": "parity-1"},
    )
    expect(target, ran, 0, b"C|parity-1|unset\n", b"")


def _environment(target: Target) -> dict[str, str]:
    ran = target.ssh("env -0")
    assert ran.code == 0, ran.text()
    pairs = (entry.decode().split("=", 1) for entry in ran.out.split(b"\0") if entry)
    return {name: value for name, value in pairs if name != "_"}


LOGIN_VARIABLES = ("HOME", "LOGNAME", "PATH", "SHELL", "SSH_CLIENT", "SSH_CONNECTION", "USER")


def test_the_sessions_environment_is_sshds(target: Target, request: pytest.FixtureRequest) -> None:
    """The same variable names as under sshd (with PAM, and the login's ~/.bashrc, which bash
    reads when sshd runs it), and the same values but for the addresses: no variable of the
    server process itself (the agent's join token, its LANG...). The reference is taken from
    sshd in the same run, as ~/.bashrc is the machine's."""
    seen = _environment(target)
    if target.name == "sshd":
        assert set(LOGIN_VARIABLES) <= set(seen), f"sshd: {sorted(seen)}"
        assert "PARITY_SERVER_PROCESS" not in seen, "sshd passed its own environment on"
        return
    reference = _environment(request.getfixturevalue("sshd_target"))
    extra, missing = sorted(set(seen) - set(reference)), sorted(set(reference) - set(seen))
    assert (extra, missing) == ([], []), f"{target.name}: more {extra}, missing {missing}"
    same = {k: v for k, v in reference.items() if not k.startswith("SSH_")}
    assert {k: seen.get(k) for k in same} == same


def test_yes_into_head_ends(target: Target) -> None:
    ran = target.ssh("yes | head -1", timeout=20)
    expect(target, ran, 0, b"y\n", b"")


def test_a_command_that_does_not_read_stdin_ends(target: Target, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as out:
        out.truncate(32 * 1024 * 1024)
    ran = target.ssh("true", stdin=big, timeout=30)
    expect(target, ran, 0, b"", b"")


@pytest.fixture(scope="module")
def no_sftp_server_sshd(
    parity_site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("sshd-no-sftp-server")
    with running_sshd(parity_site, directory, without_sftp_server=True) as target:
        yield target


@pytest.fixture(scope="module")
def no_sftp_server_node(
    parity_site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("node-no-sftp-server")
    with node_without_sftp_server(parity_site, directory, "web-nosftp") as target:
        yield target


@pytest.fixture(params=["sshd", "jumpgate"])
def bare_target(request: pytest.FixtureRequest) -> Target:
    """Each server where /usr/lib/openssh/sftp-server is missing: sshd serves SFTP with
    internal-sftp there, as its admin would configure it."""
    name = "no_sftp_server_sshd" if request.param == "sshd" else "no_sftp_server_node"
    chosen: Target = request.getfixturevalue(name)
    return chosen


def test_sftp_and_scp_without_debians_sftp_server(bare_target: Target, tmp_path: Path) -> None:
    target = bare_target
    hidden = target.ssh(f"stat -c %F {SFTP_SERVER}")  # the server's own view of the file
    assert hidden.out == b"character special file\n", f"{target.name}: {hidden.text()}"
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    _check_sftp(target, _sftp_batch(target, local, remote), local, remote)
    source = tmp_path / "tree"
    _make_tree(source)
    up = target.run(
        ["scp", "-F", str(target.config), "-r", "-q", str(source), target.remote(remote)]
    )
    assert (up.code, up.err) == (0, b""), f"{target.name}: {up.text()}"
    assert _tree(remote / "tree") == _tree(source)


ANSIBLE_CFG = """\
[defaults]
inventory = {directory}/inventory.ini
interpreter_python = /usr/bin/python3
remote_tmp = {directory}/remote-tmp
local_tmp = {directory}/local-tmp
retry_files_enabled = False
nocows = True

[ssh_connection]
pipelining = True
ssh_args = -F {config} -o ControlMaster=auto -o ControlPersist=60s
control_path = {control}/%%C
"""

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: a command as the login
      command: id -un
      register: login
      changed_when: false
    - name: a file copied as the login
      copy:
        src: "{payload}"
        dest: "{remote}/copied"
    - name: a command with become
      command: id -un
      register: became
      changed_when: false
      become: true
      become_method: sudo
    - name: what ran where
      assert:
        that: login.stdout == "{login}" and became.stdout == "root"
    - name: a file written with become
      copy:
        content: "written by a playbook\\n"
        dest: "{remote}/from-playbook"
        mode: "0640"
      become: true
      become_method: sudo
"""


def test_ansible_ping_command_copy_and_a_become_playbook(target: Target, tmp_path: Path) -> None:
    """Ansible through each target's ssh_config, pipelining and ControlMaster on: an ad-hoc
    ping, then a playbook (command, copy, and both with become) through the master the ping
    left. The login is root (the platform's test login), so ``become`` (sudo) switches root
    to root: it still runs sudo on the server, in a session like any other (decision 0033)."""
    if shutil.which("sudo") is None:
        pytest.fail("sudo is missing: run make system-deps")
    control = Path(tempfile.mkdtemp(prefix="jg-ans-"))  # short: a socket path has 104 bytes
    remote = tmp_path / "remote"
    remote.mkdir()
    (tmp_path / "ansible.cfg").write_text(
        ANSIBLE_CFG.format(directory=tmp_path, config=target.config, control=control)
    )
    (tmp_path / "inventory.ini").write_text(
        f"{target.destination.split('@')[1]} ansible_user={LOGIN}\n"
    )
    (tmp_path / "payload.txt").write_text("copied by ansible\n")
    playbook = PLAYBOOK.format(payload=tmp_path / "payload.txt", remote=remote, login=LOGIN)
    (tmp_path / "play.yml").write_text(playbook)
    env = {
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }

    def ansible(*argv: str) -> Ran:
        ran = target.run([str(BIN / argv[0]), *argv[1:]], env=env, cwd=tmp_path, timeout=90)
        assert ran.code == 0, f"{target.name}: {argv}: {ran.text()}"
        return ran

    try:
        assert b'"ping": "pong"' in ansible("ansible", "all", "-m", "ping").out
        played = ansible("ansible-playbook", "play.yml")  # through the master ping left
        assert re.search(rb"ok=5 +changed=2 +unreachable=0 +failed=0", played.out), played.text()
        assert (remote / "copied").read_text() == "copied by ansible\n"
        assert (remote / "from-playbook").read_text() == "written by a playbook\n"
        assert (remote / "from-playbook").stat().st_mode & 0o777 == 0o640
    finally:
        for master in control.iterdir():
            subprocess.run(
                ["ssh", "-o", f"ControlPath={master}", "-O", "exit", "any"],
                capture_output=True,
                timeout=10,
                check=False,
            )
        shutil.rmtree(control, ignore_errors=True)

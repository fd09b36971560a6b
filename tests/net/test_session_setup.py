"""A session on the node is set up as sshd sets one up: the real OpenSSH client logs in to a
real ``NodeServer`` on 127.0.0.1 (a user certificate of a throwaway CA, as the proxy's users
have) and the command reports what it was given: sshd's variables (``SSH_CONNECTION``,
``SSH_CLIENT``, ``SSH_TTY``...), the client's ``SendEnv``/``SetEnv`` variables the node
accepts and only those, its utmp/wtmp login record (``who``, ``last``) and PAM's account
and session stages with Debian's modules (``pam_env``, ``pam_exec``, ``pam_deny``), read from
a PAM directory of the test's (``pam_start_confdir``)."""

import asyncio
import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from jumpgate.node_agent.login_records import LoginRecords
from jumpgate.node_agent.recording import Spool
from jumpgate.node_agent.server import NodeServer
from jumpgate.node_agent.session_setup import SetupPolicy
from jumpgate.node_agent.uploads import Uploader

pytestmark = [
    pytest.mark.net,
    pytest.mark.skipif(os.geteuid() != 0, reason="sessions run as root's login: run as root"),
]

SECONDS = 30.0


class _Events:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def put(self, item: dict[str, object], /) -> object:
        self.events.append(item)
        return True


@dataclass
class Keys:
    """A user CA and root's key with a certificate it signed."""

    directory: Path
    ca: str  # the CA's public key, as the node trusts it

    @property
    def key(self) -> Path:
        return self.directory / "user"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("ca", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
            check=True,
        )
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(directory / "ca"),
            "-I",
            "test",
            "-n",
            "root",
            str(directory / "user.pub"),
        ],
        check=True,
    )
    return Keys(directory, (directory / "ca.pub").read_text())


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def _session(
    keys: Keys,
    policy: SetupPolicy,
    tmp_path: Path,
    *options: str,
    command: str,
    env: dict[str, str] | None = None,
) -> tuple[Ran, int, _Events]:
    """``command`` run by OpenSSH's ``ssh`` on a node with ``policy``: what it printed and
    its exit status, the node's port, and the node's audit events."""
    rans, port, events = await _sessions(
        keys, policy, tmp_path, *options, commands=[command], env=env
    )
    return rans[0], port, events


async def _sessions(
    keys: Keys,
    policy: SetupPolicy,
    tmp_path: Path,
    *options: str,
    commands: list[str],
    env: dict[str, str] | None = None,
) -> tuple[list[Ran], int, _Events]:
    """``commands`` run one after the other, each in a session of its own, on one node."""
    events = _Events()
    uploads = Uploader(Spool(tmp_path / "recordings"), events)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=lambda: NodeServer([keys.ca], events, uploads, setup=policy),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encoding=None,
    )
    port = int(server.sockets[0].getsockname()[1])
    try:
        return (
            [await _ssh(keys, port, *options, command=c, env=env) for c in commands],
            port,
            events,
        )
    finally:
        server.close()
        await server.wait_closed()


async def _ssh(
    keys: Keys, port: int, *options: str, command: str, env: dict[str, str] | None
) -> Ran:
    child = await asyncio.create_subprocess_exec(
        "ssh", "-F", "/dev/null", "-i", str(keys.key), "-p", str(port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *options, "root@127.0.0.1", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**_clean_env(), **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), SECONDS)
    assert child.returncode is not None
    return Ran(child.returncode, out.decode(), err.decode())


def _clean_env() -> dict[str, str]:
    """The client's environment without the locale the test runner may have."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LANG", "LC_"))}


def run(
    keys: Keys, policy: SetupPolicy, tmp_path: Path, *options: str, command: str, **kw: object
) -> tuple[Ran, int, _Events]:
    return asyncio.run(_session(keys, policy, tmp_path, *options, command=command, **kw))  # type: ignore[arg-type]


def _vars(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


NO_RECORDS = SetupPolicy(records=None)
ROOT_PATH = ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_an_exec_session_has_sshds_variables_and_no_tty(keys: Keys, tmp_path: Path) -> None:
    ran, port, _ = run(keys, NO_RECORDS, tmp_path, command="env")
    assert ran.code == 0, ran.err
    env = _vars(ran.out)
    client = re.fullmatch(rf"127\.0\.0\.1 (\d+) 127\.0\.0\.1 {port}", env["SSH_CONNECTION"])
    assert client, env["SSH_CONNECTION"]
    assert env["SSH_CLIENT"] == f"127.0.0.1 {client[1]} {port}"
    assert (env["USER"], env["LOGNAME"], env["HOME"]) == ("root", "root", "/root")
    assert env["MAIL"] == "/var/mail/root"
    # bash sources ~/.bashrc when run by sshd (it sees SSH_CLIENT), which may add to PATH
    assert env["PATH"].endswith(ROOT_PATH)
    assert "SSH_TTY" not in env
    assert "TERM" not in env


def test_a_pty_session_has_its_tty_in_ssh_tty_and_the_clients_term(
    keys: Keys, tmp_path: Path
) -> None:
    ran, _, _ = run(
        keys, NO_RECORDS, tmp_path, "-tt",
        command="echo SSH_TTY=$SSH_TTY; echo TTY=$(tty); echo TERM=$TERM",
        env={"TERM": "vt220"},
    )  # fmt: skip
    assert ran.code == 0, ran.err
    env = _vars(ran.out.replace("\r", ""))
    assert env["SSH_TTY"].startswith("/dev/pts/")
    assert env["SSH_TTY"] == env["TTY"]
    assert env["TERM"] == "vt220"


SENT = (
    "-o", "SendEnv=LANG LC_* JG_*",
    "-o", "SetEnv=LC_TIME=fr_FR.UTF-8 LD_PRELOAD=/tmp/evil.so PATH=/tmp/evil USER=mallory"
    " JG_SET=set",
)  # fmt: skip
CLIENT_ENV = {"LANG": "de_DE.UTF-8", "LC_ALL": "C", "JG_SENT": "sent"}


@pytest.mark.parametrize(
    ("accept_env", "passed", "kept_out"),
    [
        (("LANG", "LC_*"), {"LANG", "LC_ALL", "LC_TIME"}, {"LD_PRELOAD", "JG_SENT", "JG_SET"}),
        (("LANG", "LC_*", "JG_*", "PATH", "USER"), {"JG_SENT", "JG_SET"}, {"LD_PRELOAD"}),
        ((), set(), {"LANG", "LC_ALL", "LC_TIME", "JG_SENT", "LD_PRELOAD"}),
    ],
    ids=["default-LANG-LC_*", "listed-JG_*-and-PATH", "none"],
)
def test_send_env_and_set_env_pass_only_what_the_node_accepts(
    keys: Keys, tmp_path: Path, accept_env: tuple[str, ...], passed: set[str], kept_out: set[str]
) -> None:
    policy = SetupPolicy(accept_env=accept_env, records=None)
    ran, _, _ = run(keys, policy, tmp_path, *SENT, command="env", env=CLIENT_ENV)
    assert ran.code == 0, ran.err
    env = _vars(ran.out)
    sent = {**CLIENT_ENV, "LC_TIME": "fr_FR.UTF-8", "JG_SET": "set", "LD_PRELOAD": "/tmp/evil.so"}
    assert {name: env.get(name) for name in passed} == {name: sent[name] for name in passed}
    # What is kept out is unset, or the node's own (LANG: the agent's locale)
    assert {name for name in kept_out if env.get(name) == sent[name]} == set(), env
    # A client never sets the login's own, even where a pattern names them (as sshd)
    assert env["PATH"].endswith(ROOT_PATH)
    assert env["USER"] == "root"


@pytest.fixture
def records(tmp_path: Path) -> LoginRecords:
    for name in ("utmp", "wtmp"):
        (tmp_path / name).touch()
    return LoginRecords(str(tmp_path / "utmp"), str(tmp_path / "wtmp"))


def test_a_pty_session_is_in_utmp_while_it_runs_and_in_wtmp_after(
    keys: Keys, tmp_path: Path, records: LoginRecords
) -> None:
    policy = SetupPolicy(records=records)
    ran, _, _ = run(keys, policy, tmp_path, "-tt", command=f"tty; who {records.utmp}")
    assert ran.code == 0, ran.err
    tty, *who = ran.out.replace("\r", "").splitlines()
    line = tty.removeprefix("/dev/")
    assert re.fullmatch(rf"root +{line} +\S.*\S \(127\.0\.0\.1\)", who[0]), who
    after = subprocess.run(["who", records.utmp], capture_output=True, text=True, check=True)
    assert after.stdout == ""  # its entry is dead: nobody is logged in
    time.sleep(1.1)  # ``last`` says "still running" of a logout in its own second
    last = subprocess.run(
        ["last", "-f", records.wtmp], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert re.match(rf"root +{line} +127\.0\.0\.1 .* - \d\d:\d\d +\(00:00\)", last[0]), last


def test_an_exec_session_writes_no_login_record(
    keys: Keys, tmp_path: Path, records: LoginRecords
) -> None:
    ran, _, _ = run(keys, SetupPolicy(records=records), tmp_path, command="true")
    assert ran.code == 0, ran.err
    assert Path(records.utmp).read_bytes() == b""
    assert Path(records.wtmp).read_bytes() == b""


@pytest.fixture
def pam_dir(tmp_path: Path) -> Path:
    """PAM services of the test: ``jg-session`` (pam_env sets a variable and pam_exec logs
    each stage), ``jg-deny`` (pam_deny in account)."""
    directory = tmp_path / "pam.d"
    directory.mkdir()
    (tmp_path / "pam_env").write_text("JG_FROM_PAM=set-by-pam_env\nSSH_CONNECTION=forged\n")
    hook = tmp_path / "hook"
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER $PAM_RHOST" >> {tmp_path}/stages\n')
    hook.chmod(0o755)
    (directory / "jg-session").write_text(
        "account required pam_permit.so\n"
        f"session required pam_env.so readenv=1 envfile={tmp_path}/pam_env conffile=/dev/null\n"
        f"session required pam_exec.so {hook}\n"
    )
    (directory / "jg-deny").write_text(
        "account required pam_deny.so\nsession required pam_permit.so\n"
    )
    return directory


def test_pam_opens_the_session_before_the_command_and_closes_it_after(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    policy = SetupPolicy(records=None, pam_service="jg-session", pam_confdir=pam_dir)
    ran, _, _ = run(keys, policy, tmp_path, command=f"env; cat {tmp_path}/stages")
    assert ran.code == 0, ran.err
    env = _vars(ran.out)
    assert env["JG_FROM_PAM"] == "set-by-pam_env"
    assert env["SSH_CONNECTION"].startswith("127.0.0.1 ")  # PAM may not forge it (sshd)
    assert "MAIL" not in env  # with PAM, pam_mail sets it or nothing does (sshd)
    # The command saw the session opened; after it, the session was closed
    assert "open_session root 127.0.0.1" in ran.out
    assert "close_session" not in ran.out
    assert (tmp_path / "stages").read_text().splitlines() == [
        "open_session root 127.0.0.1",
        "close_session root 127.0.0.1",
    ]


def test_pam_modules_act_on_each_sessions_processes_never_on_the_agent(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    # Debian's sshd stack has both: pam_loginuid sets the calling process's loginuid (once
    # only), pam_limits its rlimits. They must be the session's, session after session.
    limits = tmp_path / "limits.conf"
    limits.write_text("root - nofile 1234\n")
    (pam_dir / "jg-limits").write_text(
        "account required pam_permit.so\n"
        "session required pam_loginuid.so\n"
        f"session required pam_limits.so conf={limits}\n"
    )
    loginuid = Path("/proc/self/loginuid").read_text()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    policy = SetupPolicy(records=None, pam_service="jg-limits", pam_confdir=pam_dir)
    command = "ulimit -n; cat /proc/self/loginuid; echo"
    rans, _, _ = asyncio.run(_sessions(keys, policy, tmp_path, commands=[command] * 2))
    for ran in rans:
        assert ran.code == 0, ran.err
        assert ran.out.split() == ["1234", "0"]
    assert Path("/proc/self/loginuid").read_text() == loginuid  # the agent's own: unchanged
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == nofile


def test_a_pam_pty_session_is_the_ttys_and_ends_as_its_command_did(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    hook = tmp_path / "tty-hook"
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_TTY" >> {tmp_path}/ttys\n')
    hook.chmod(0o755)
    (pam_dir / "jg-tty").write_text(
        f"account required pam_permit.so\nsession required pam_exec.so {hook}\n"
    )
    policy = SetupPolicy(records=None, pam_service="jg-tty", pam_confdir=pam_dir)
    # The shell leads its own session on the PTY; killed by a signal, the client is told so
    command = "echo TTY=$(tty); ps -o sid= -p $$ | tr -d ' '; echo $$; kill -TERM $$"
    ran, _, events = run(keys, policy, tmp_path, "-tt", command=command)
    lines = ran.out.replace("\r", "").split()
    tty = lines[0].removeprefix("TTY=")
    assert tty.startswith("/dev/pts/"), ran.out
    assert lines[1] == lines[2]  # its session id is its own pid: it leads its session
    assert ran.code == 255  # OpenSSH's status for a command ended by a signal
    ended = [e["fields"]["exit_code"] for e in events.events if e["type"] == "session.end"]  # type: ignore[index]
    assert ended == [128 + 15]  # SIGTERM, as the launcher re-raised it
    assert (tmp_path / "ttys").read_text().splitlines() == [
        f"open_session {tty}",
        f"close_session {tty}",
    ]


async def _copy(keys: Keys, policy: SetupPolicy, tmp_path: Path, *argvs: list[str]) -> list[Ran]:
    """``sftp``/``scp`` command lines (``PORT``: the node's port) run on one node."""
    uploads = Uploader(Spool(tmp_path / "recordings"), _Events())
    server = await asyncssh.listen(
        "127.0.0.1", 0,
        server_factory=lambda: NodeServer([keys.ca], _Events(), uploads, setup=policy),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")], encoding=None,
    )  # fmt: skip
    port = str(server.sockets[0].getsockname()[1])
    options = ["-F", "/dev/null", "-i", str(keys.key), "-o", "StrictHostKeyChecking=no"]
    options += ["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-P", port]
    rans = []
    try:
        for argv in argvs:
            child = await asyncio.create_subprocess_exec(
                argv[0], *options, *argv[1:], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_clean_env(),
            )  # fmt: skip
            out, err = await asyncio.wait_for(child.communicate(), SECONDS)
            assert child.returncode is not None
            rans.append(Ran(child.returncode, out.decode(), err.decode()))
        return rans
    finally:
        server.close()
        await server.wait_closed()


def test_sftp_and_legacy_scp_run_in_a_pam_session_as_under_sshd(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    policy = SetupPolicy(records=None, pam_service="jg-session", pam_confdir=pam_dir)
    (tmp_path / "up").write_text("hello\n")
    (tmp_path / "batch").write_text(f"put {tmp_path}/up {tmp_path}/by-sftp\n")
    rans = asyncio.run(
        _copy(
            keys, policy, tmp_path,
            ["sftp", "-b", str(tmp_path / "batch"), "root@127.0.0.1"],
            ["scp", "-O", str(tmp_path / "up"), f"root@127.0.0.1:{tmp_path}/by-scp"],
        )
    )  # fmt: skip
    for ran in rans:
        assert ran.code == 0, ran.err
    assert (tmp_path / "by-sftp").read_text() == (tmp_path / "by-scp").read_text() == "hello\n"
    opened_closed = ["open_session root 127.0.0.1", "close_session root 127.0.0.1"]
    assert (tmp_path / "stages").read_text().splitlines() == opened_closed * 2


async def _hung_up(keys: Keys, policy: SetupPolicy, tmp_path: Path, command: str) -> None:
    """``command`` started by ``ssh``, whose process is then killed (the user's gone)."""
    uploads = Uploader(Spool(tmp_path / "recordings"), _Events())
    server = await asyncssh.listen(
        "127.0.0.1", 0,
        server_factory=lambda: NodeServer([keys.ca], _Events(), uploads, setup=policy),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")], encoding=None,
    )  # fmt: skip
    port = str(server.sockets[0].getsockname()[1])
    try:
        child = await asyncio.create_subprocess_exec(
            "ssh", "-F", "/dev/null", "-i", str(keys.key), "-p", port,
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "root@127.0.0.1", command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=_clean_env(),
        )  # fmt: skip
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), SECONDS) == b"started\n"
        child.kill()
        await child.wait()
        deadline = time.monotonic() + SECONDS
        while "close_session" not in (tmp_path / "stages").read_text():
            assert time.monotonic() < deadline, "PAM's session was not closed"
            await asyncio.sleep(0.1)
    finally:
        server.close()
        await server.wait_closed()


def test_a_user_who_goes_hangs_up_the_command_and_pams_session_is_closed(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    policy = SetupPolicy(records=None, pam_service="jg-session", pam_confdir=pam_dir)
    command = f"trap 'echo hup > {tmp_path}/hup; exit 1' HUP; echo started; sleep 30 & wait"
    asyncio.run(_hung_up(keys, policy, tmp_path, command))
    assert (tmp_path / "hup").read_text() == "hup\n"  # the command had its hangup
    assert (tmp_path / "stages").read_text().splitlines() == [
        "open_session root 127.0.0.1",
        "close_session root 127.0.0.1",
    ]


def test_a_pam_session_that_cannot_be_recorded_runs_nothing_and_pams_is_closed(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    (tmp_path / "recordings").write_text("not a directory: nothing can be spooled here\n")
    policy = SetupPolicy(records=None, pam_service="jg-session", pam_confdir=pam_dir)
    ran, _, events = run(keys, policy, tmp_path, command=f"touch {tmp_path}/ran")
    assert ran.code == 255
    assert not (tmp_path / "ran").exists()
    assert "could not be recorded" in ran.err
    started = [e["outcome"] for e in events.events if e["type"] == "session.start"]
    assert started == ["E"]
    assert (tmp_path / "stages").read_text().splitlines() == [
        "open_session root 127.0.0.1",
        "close_session root 127.0.0.1",
    ]


def test_without_pam_the_agent_starts_the_command_itself_with_it_a_launcher_does(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    ran, _, _ = run(keys, NO_RECORDS, tmp_path, command="echo $PPID")
    assert ran.out.split() == [str(os.getpid())]  # no launcher: no extra process, no cost
    policy = SetupPolicy(records=None, pam_service="jg-session", pam_confdir=pam_dir)
    ran, _, _ = run(keys, policy, tmp_path, command="echo $PPID; ps -o ppid= -p $PPID")
    launcher, its_parent = ran.out.split()
    assert launcher != str(os.getpid())
    assert its_parent == str(os.getpid())


def test_pam_refusing_the_account_refuses_the_session_in_one_line(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    policy = SetupPolicy(records=None, pam_service="jg-deny", pam_confdir=pam_dir)
    ran, _, events = run(keys, policy, tmp_path, command=f"touch {tmp_path}/ran")
    assert ran.code != 0
    assert not (tmp_path / "ran").exists()
    assert ran.err.strip().splitlines() == [
        "jumpgate: session refused: PAM (service 'jg-deny') refused login 'root': "
        "Authentication failure; ask the node's admin"
    ]
    started = [e for e in events.events if e["type"] == "session.start"]
    assert started
    assert started[0]["outcome"] == "E"


def test_a_pam_service_that_cannot_start_refuses_the_session_in_one_line(
    keys: Keys, tmp_path: Path, pam_dir: Path
) -> None:
    policy = SetupPolicy(records=None, pam_service="jg-missing", pam_confdir=pam_dir)
    ran, _, _ = run(keys, policy, tmp_path, command=f"touch {tmp_path}/ran")
    assert ran.code != 0
    assert not (tmp_path / "ran").exists()
    assert ran.err.strip().startswith("jumpgate: session refused: PAM could not start service")
    assert len(ran.err.strip().splitlines()) == 1

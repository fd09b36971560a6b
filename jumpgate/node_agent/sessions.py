"""Running a session on the node: exec, interactive shell with a PTY, SFTP.

Commands run as the requested OS user when the agent runs as root (as sshd does), with that
user's shell, home and a clean environment. SFTP is served by the agent's own SFTP server in
a child process that has become that user (``sftp_child``), so file access obeys the user's
permissions, never the agent's.
"""

import asyncio
import contextlib
import fcntl
import os
import pty
import pwd
import shutil
import signal
import struct
import termios
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from asyncssh import EXTENDED_DATA_STDERR

from jumpgate.node_agent import session_env, sftp_child
from jumpgate.node_agent.child_io import Input, Output, read_from, write_to
from jumpgate.node_agent.pam_launch import Launcher
from jumpgate.node_agent.session_channel import SessionChannel

PTY_DRAIN_SECONDS = 2.0
HANGUP_SECONDS = 2.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHADOW = "/etc/shadow"


@dataclass(frozen=True)
class Account:
    """The OS user a session runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    extra_env: tuple[tuple[str, str], ...] = ()  # the session's own (SSH_AUTH_SOCK), set last

    @classmethod
    def lookup(cls, name: str) -> "Account":
        entry = pwd.getpwnam(name)
        shell = entry.pw_shell if os.path.exists(entry.pw_shell) else "/bin/sh"
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, shell)

    def environment(self, term: str | None, tty: str | None = None) -> dict[str, str]:
        """The login's environment, as sshd's with nothing known of the session."""
        return session_env.build(self, term=term, tty=tty)

    def spawn_options(self) -> dict[str, object]:
        """Switch to the user only when the agent can (runs as root) and needs to."""
        options: dict[str, object] = {"cwd": self.home if os.path.isdir(self.home) else "/"}
        if os.geteuid() == 0 and self.uid != 0:
            options.update(
                user=self.uid, group=self.gid, extra_groups=os.getgrouplist(self.name, self.gid)
            )
        return options


class NotStarted(Exception):
    """The session was refused as it started (the user was told): ``code`` is its status."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def expired(name: str, *, shadow: str = SHADOW, today: int | None = None) -> bool:
    """Whether the account ``name`` has expired (``usermod --expiredate``): as sshd and
    ``pam_unix`` read ``/etc/shadow``, expired from its expiry day on. False where the node
    cannot tell (shadow unreadable: an agent that is not root; an account not in it)."""
    try:
        with open(shadow) as entries:
            found = [line.split(":") for line in entries if line.startswith(f"{name}:")]
    except OSError:
        return False
    if not found or len(found[0]) < 8 or not found[0][7].strip().isdigit():
        return False  # no expiry date (empty; -1 is none either)
    day = today if today is not None else int(time.time() // 86400)
    return day >= int(found[0][7])


class Setup(Protocol):
    """What sshd does around a session's command (``session_setup.SessionSetup``)."""

    @property
    def launcher(self) -> Launcher | None:
        """Starts the command in a PAM session (None: without PAM, by the agent)."""

    def environment(self, term: str | None, tty: str | None = None) -> dict[str, str]:
        """The command's environment."""

    def layers(
        self, term: str | None, tty: str | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The command's environment under PAM's and over it."""

    def opened(self) -> None:
        """The session starts (its recording, its start event); ``NotStarted`` if refused.
        Called once PAM's stages passed, before the command runs."""

    def started(self, pid: int, tty: str) -> None:
        """The command runs on the PTY ``tty`` (its login record)."""

    def ended(self) -> None:
        """The command on the PTY has exited."""


class _Bare:
    """No setup: the login's environment, no login record."""

    launcher = None

    def __init__(self, account: Account) -> None:
        self.environment = account.environment

    def layers(
        self, term: str | None, tty: str | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        return self.environment(term, tty), {}

    def opened(self) -> None:
        pass

    def started(self, pid: int, tty: str) -> None:
        pass

    def ended(self) -> None:
        pass


async def run(
    session: SessionChannel,
    account: Account,
    argv: list[str] | None = None,
    setup: Setup | None = None,
) -> int:
    """Serve one session channel until its command ends and all its output is read; its
    return code (negative: the signal that ended it). ``argv``, if given, is run as it is
    instead of the command through the login's shell (a judged scp transfer); ``setup``
    gives its environment and keeps its login record (default: the login's own environment,
    no record)."""
    setup = setup if setup is not None else _Bare(account)
    if setup.launcher is None:
        setup.opened()  # without PAM, nothing is asked before the session starts
    if session.subsystem == "sftp":
        return await _sftp(session, account, setup)
    if session.subsystem:
        setup.opened()
        session.say(f"subsystem {session.subsystem!r} is not served\n".encode())
        return 1
    if session.term_type:
        return await _with_pty(session, account, setup)
    command = _direct(argv) if argv is not None else _argv(session, account)
    return await _with_pipes(session, command, account, setup, start_new_session=True)


def _argv(session: SessionChannel, account: Account) -> list[str]:
    if session.command is None:
        return [account.shell, "-l"]
    return [account.shell, "-c", session.command]


def _direct(argv: list[str]) -> list[str]:
    """``argv`` with its program found on the sessions' PATH, never the agent's."""
    program = shutil.which(argv[0], path=DEFAULT_PATH)
    if program is None:
        raise FileNotFoundError(f"{argv[0]} is not installed on the node")
    return [program, *argv[1:]]


async def _with_pipes(
    session: SessionChannel, argv: list[str], account: Account, setup: Setup, **options: Any
) -> int:
    """Run ``argv`` on three pipes, as sshd does without a PTY."""
    pipes = [os.pipe() for _ in range(3)]
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
    ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
    try:
        child, pid = await _spawn(setup, argv, account, theirs, None, None, **options)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    session.pid = pid
    stdin = Input(session.channel, terminal=False)
    outputs = [Output(None, session.deliver), Output(EXTENDED_DATA_STDERR, session.deliver)]
    await write_to(ours[0], stdin)
    await read_from(ours[1], outputs[0])
    await read_from(ours[2], outputs[1])
    session.attach(stdin, outputs)
    return await _until_ended(child, session, drain=None)


async def _with_pty(session: SessionChannel, account: Account, setup: Setup) -> int:
    master, slave = pty.openpty()
    tty = os.ttyname(slave)
    width, height, pixwidth, pixheight = session.term_size
    with contextlib.suppress(OSError):
        size = struct.pack("HHHH", height, width, pixwidth, pixheight)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
    try:
        writing = os.dup(master)
        try:
            child, pid = await _spawn(
                setup,
                _argv(session, account),
                account,
                [slave] * 3,
                session.term_type,
                tty,
                start_new_session=True,
                preexec_fn=_controlling_tty,
            )
        except BaseException:
            os.close(writing)
            raise
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    session.pid = pid
    # Input and output each get their own descriptor of the master, as sshd's do.
    terminal = Input(session.channel, terminal=True)
    output = Output(None, session.deliver)
    session.terminal = writing
    await write_to(writing, terminal)
    await read_from(master, output)
    session.attach(terminal, [output])
    # A background job may keep the PTY open; like sshd, end the session with the shell.
    # The login record is kept while the command runs (utmp/wtmp, as sshd keeps it).
    setup.started(pid, tty)
    try:
        return await _until_ended(child, session, drain=PTY_DRAIN_SECONDS)
    finally:
        setup.ended()


async def _spawn(
    setup: Setup,
    argv: list[str],
    account: Account,
    stdio: list[int],
    term: str | None,
    tty: str | None,
    **options: Any,
) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``argv`` as the login on ``stdio``: the process to wait for, and the command's
    pid (its process group's, for signals and hangups). With PAM, through its launcher: the
    process is the launcher, which ends as the command does."""
    if setup.launcher is not None:
        login = (account.uid, account.gid, account.home if os.path.isdir(account.home) else "/")
        if "user" in options and options["user"] is None:  # it switches itself (SFTP child)
            login = (os.geteuid(), os.getegid(), options.get("cwd", "/"))
        return await setup.launcher.start(
            argv,
            setup.layers(term, tty),
            login,
            options.get("env"),  # the SFTP child's own: never the session's while root
            (stdio[0], stdio[1], stdio[2]),
            tty=tty,
            opened=setup.opened,
        )
    child = await asyncio.create_subprocess_exec(
        *argv,
        stdin=stdio[0],
        stdout=stdio[1],
        stderr=stdio[2],
        # ``options`` win: the SFTP child is started as the agent (its own environment)
        # and switches itself.
        **{"env": setup.environment(term, tty), **account.spawn_options(), **options},
    )
    return child, child.pid


async def _until_ended(
    child: asyncio.subprocess.Process, session: SessionChannel, drain: float | None
) -> int:
    """The command's return code once it has exited and its output has all been read (for
    at most ``drain`` seconds after it exited, if given; as long as the output stays open
    otherwise, as sshd waits for a background job holding the pipes)."""
    try:
        code = await _until_exit(child, session.pid or child.pid, session)
        wait = drain if not session.lost.is_set() else PTY_DRAIN_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_first(session.outputs_ended(), session.lost.wait()), wait)
        return code
    finally:
        session.detach()


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    """Until the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_exit(
    child: asyncio.subprocess.Process, group: int, session: SessionChannel
) -> int:
    """The command's return code; if the user's connection goes first, hang up on it as sshd
    does (SIGHUP to its process group, SIGKILL if it lingers) rather than leave it running."""
    async with asyncio.TaskGroup() as tasks:  # neither wait outlives this one
        exited = tasks.create_task(child.wait())
        lost = tasks.create_task(session.lost.wait())
        await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        if not exited.done():
            for sig, grace in ((signal.SIGHUP, HANGUP_SECONDS), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), grace)
                    break
                except TimeoutError:
                    continue
    return exited.result()


def _controlling_tty() -> None:
    """Make stdin (the PTY slave) the session's controlling terminal, as a login does."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _sftp(session: SessionChannel, account: Account, setup: Setup) -> int:
    """SFTP: the agent's own SFTP server run as the login on raw bytes, as sshd runs its
    ``sftp-server`` (``sftp_child``)."""
    conn = session.channel.get_connection()
    versions = (conn.get_extra_info(f"{side}_version", "") for side in ("client", "server"))
    argv = sftp_child.argv(account, *versions)
    # In a session of its own, as sshd starts every command: the hangup reaches it; its
    # environment is never the session's: it starts as root (adversarial review, LD_*).
    options = {
        **sftp_child.SPAWN_OPTIONS,
        "start_new_session": True,
        "env": sftp_child.environment(),
    }
    return await _with_pipes(session, argv, account, setup, **options)

"""Running a session on the node: exec, interactive shell with a PTY, SFTP.

Commands run as the requested OS user when the agent runs as root (as sshd does), with that
user's shell, home and a clean environment. SFTP is served by the agent's own SFTP server in
a child process that has become that user (``sftp_child``), so file access obeys the user's
permissions, never the agent's.
"""

import asyncio
import contextlib
import io
import os
import pty
import pwd
import shutil
import signal
import termios
from dataclasses import dataclass
from typing import Any

import asyncssh

from jumpgate.node_agent import sftp_child

PTY_DRAIN_SECONDS = 2.0
HANGUP_SECONDS = 2.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Account:
    """The OS user a session runs as."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def lookup(cls, name: str) -> "Account":
        entry = pwd.getpwnam(name)
        shell = entry.pw_shell if os.path.exists(entry.pw_shell) else "/bin/sh"
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, shell)

    def environment(self, term: str | None) -> dict[str, str]:
        env = {
            "USER": self.name,
            "LOGNAME": self.name,
            "HOME": self.home,
            "SHELL": self.shell,
            "PATH": DEFAULT_PATH,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        if term:
            env["TERM"] = term
        return env

    def spawn_options(self) -> dict[str, object]:
        """Switch to the user only when the agent can (runs as root) and needs to."""
        options: dict[str, object] = {"cwd": self.home if os.path.isdir(self.home) else "/"}
        if os.geteuid() == 0 and self.uid != 0:
            options.update(
                user=self.uid, group=self.gid, extra_groups=os.getgrouplist(self.name, self.gid)
            )
        return options


async def run(
    process: asyncssh.SSHServerProcess[bytes], account: Account, argv: list[str] | None = None
) -> int:
    """Serve one session channel to completion; the exit status. ``argv``, if given, is run
    as it is instead of the command through the login's shell (a judged scp transfer)."""
    if process.subsystem == "sftp":
        return await _sftp(process, account)
    if process.subsystem:
        process.stderr.write(f"subsystem {process.subsystem!r} is not served\n".encode())
        return 1
    if process.term_type:
        return await _with_pty(process, account)
    return await _with_pipes(process, account, argv)


def _argv(process: asyncssh.SSHServerProcess[bytes], account: Account) -> list[str]:
    command = process.command
    if command is None:
        return [account.shell, "-l"]
    return [account.shell, "-c", command]


def _direct(argv: list[str]) -> list[str]:
    """``argv`` with its program found on the sessions' PATH, never the agent's."""
    program = shutil.which(argv[0], path=DEFAULT_PATH)
    if program is None:
        raise FileNotFoundError(f"{argv[0]} is not installed on the node")
    return [program, *argv[1:]]


async def _spawn_piped(
    process: asyncssh.SSHServerProcess[bytes], argv: list[str], account: Account, **options: Any
) -> asyncio.subprocess.Process:
    """Start ``argv`` with its stdin, stdout and stderr redirected to the channel.

    Output comes through plain OS pipes, not asyncio streams: asyncssh reads a pipe with
    transport flow control, while its reader of an asyncio StreamReader can call read() twice
    when output is paused and resumed quickly, which kills the connection (large outputs did,
    every few runs). Input stays an asyncio stream: asyncssh's pipe writer can close the pipe
    at the user's EOF before the last bytes are written (``cat`` echoed short).
    """
    pipes = [os.pipe() for _ in range(2)]
    ours = [pipes[0][0], pipes[1][0]]
    theirs = [pipes[0][1], pipes[1][1]]
    try:
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=theirs[0],
            stderr=theirs[1],
            env=account.environment(None),
            # ``options`` win: the SFTP child is started as the agent and switches itself.
            **{**account.spawn_options(), **options},
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    await process.redirect(
        stdin=child.stdin,
        stdout=os.fdopen(ours[0], "rb", buffering=0),
        stderr=os.fdopen(ours[1], "rb", buffering=0),
    )
    return child


async def _with_pipes(
    process: asyncssh.SSHServerProcess[bytes], account: Account, argv: list[str] | None = None
) -> int:
    command = _direct(argv) if argv is not None else _argv(process, account)
    child = await _spawn_piped(process, command, account, start_new_session=True)
    status = await _until_exit(child, process)
    status = status if status >= 0 else 128 - status
    # Exit only once the child's last output has been read and sent: drain() waits for the
    # redirected pipe to reach EOF as well as for the channel to flush. A channel already
    # gone takes nothing more: then do not wait on it (or fail) for long.
    if process.channel.is_closing():
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(_drain(process), PTY_DRAIN_SECONDS)
        return status
    await _drain(process)
    return status


async def _drain(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await process.stdout.drain()
    await process.stderr.drain()


async def _with_pty(process: asyncssh.SSHServerProcess[bytes], account: Account) -> int:
    master, slave = pty.openpty()
    try:
        child = await asyncio.create_subprocess_exec(
            *_argv(process, account),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=account.environment(process.term_type),
            start_new_session=True,
            preexec_fn=_controlling_tty,
            **account.spawn_options(),  # type: ignore[arg-type]
        )
    finally:
        os.close(slave)
    # Input and output each get their own descriptor of the master, as sshd's do: asyncssh
    # closes the input side at the user's EOF (``ssh -tt host cmd </dev/null`` sends it at
    # once), and a shared one took the output with it: the command's output was lost.
    output = os.fdopen(master, "rb", buffering=0)
    try:
        terminal = _TerminalInput(os.dup(master), "wb")
    except BaseException:
        output.close()
        raise
    # asyncssh sizes the PTY from the request and follows window changes on a tty it writes to.
    await process.redirect(stdin=terminal, stdout=output, send_eof=False)
    status = await _until_exit(child, process)
    # A background job may keep the PTY open; like sshd, end the session with the shell.
    with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
        await asyncio.wait_for(process.stdout.drain(), PTY_DRAIN_SECONDS)
    return status if status >= 0 else 128 - status


class _TerminalInput(io.FileIO):
    """The PTY master's input side. Closing it (the user's EOF) types the terminal's EOF
    character first, as a user at the keyboard would with ^D, so a command reading its input
    (``cat``) ends rather than waits forever; a terminal in raw mode gets nothing typed."""

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError, termios.error):
                attributes = termios.tcgetattr(self.fileno())
                if attributes[3] & termios.ICANON:
                    os.write(self.fileno(), attributes[6][termios.VEOF])
        super().close()


async def _until_exit(
    child: asyncio.subprocess.Process, process: asyncssh.SSHServerProcess[bytes]
) -> int:
    """The command's exit status; if the user's connection goes first, hang up on it as sshd
    does (SIGHUP to its process group, SIGKILL if it lingers) rather than leave it running."""
    async with asyncio.TaskGroup() as tasks:  # neither wait outlives this one
        exited = tasks.create_task(child.wait())
        lost = tasks.create_task(process.channel.wait_closed())
        await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
        lost.cancel()
        if not exited.done():
            for sig, grace in ((signal.SIGHUP, HANGUP_SECONDS), (signal.SIGKILL, None)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig)
                try:
                    await asyncio.wait_for(asyncio.shield(exited), grace)
                    break
                except TimeoutError:
                    continue
    return exited.result()


def _controlling_tty() -> None:
    """Make stdin (the PTY slave) the session's controlling terminal, as a login does."""
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def _sftp(process: asyncssh.SSHServerProcess[bytes], account: Account) -> int:
    conn = process.channel.get_connection()
    argv = sftp_child.argv(account, conn.get_extra_info("client_version", ""))
    child = await _spawn_piped(process, argv, account, **sftp_child.SPAWN_OPTIONS)
    status = await _until_exit(child, process)
    await process.stdout.drain()
    return status

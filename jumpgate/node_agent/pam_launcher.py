"""The process a PAM session's command is started from, as sshd's per-connection child and
Teleport's ``teleport exec`` are: ``pam_launch.LAUNCHER`` with the fds ``SPEC STATUS``.

PAM's modules act on the process that calls them (``pam_loginuid`` sets its loginuid once,
``pam_limits`` its rlimits, ``pam_keyinit`` its keyring): what they set must be the session's,
so they run here, in a child of the agent (as root, the session's stdio or PTY slave as its
own), never in the agent. The agent (``pam_launch``) starts it and talks over two pipes:

- SPEC (agent → launcher): one JSON line (``Spec``), later ``go`` once the agent has started
  the session (its recording, its ``session.start`` event); EOF instead: it does not start.
- STATUS (launcher → agent): ``ok`` once PAM's account and session stages passed, or ``no
  <one line>``; after ``go``, ``pid <n>`` of the command; then EOF once the command was
  exec'd, or ``error <why>`` if it could not be.

The command is forked with the login's ids, home and environment (the agent's layers with
PAM's between them, ``pam_session.merged``), in a session of its own with the PTY as its
controlling terminal, as the agent starts it without PAM. The launcher waits for it with the
usual signals ignored, closes the PAM session and exits as the command did: its status, or
the signal that ended it raised on itself, so the agent reports the same to the client.
"""

import contextlib
import fcntl
import json
import os
import resource
import signal
import sys
import termios
from pathlib import Path
from typing import Any, NoReturn

from jumpgate.node_agent.pam_session import PamError, PamSession, merged

IGNORED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
"""What the launcher ignores while its command runs: a hangup is the command's, and PAM's
session must still be closed after it."""


def main(argv: list[str]) -> NoReturn:
    spec_fd, status_fd = int(argv[0]), int(argv[1])
    os.set_inheritable(spec_fd, False)  # the command gets neither pipe
    with os.fdopen(spec_fd, "rb", buffering=0) as spec_pipe:
        try:
            spec: dict[str, Any] = json.loads(_line(spec_pipe))
        except ValueError:  # the agent gave up on the session before it said what it is
            os._exit(1)
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        try:
            pam = PamSession.open(
                spec["service"],
                spec["user"],
                rhost=spec["rhost"],
                tty=spec["tty"] or "ssh",
                confdir=Path(spec["confdir"]) if spec["confdir"] else None,
            )
        except PamError as exc:
            _say(status_fd, "no " + " ".join(str(exc).split()))
            os._exit(1)
        try:
            _say(status_fd, "ok")
            if _line(spec_pipe) != b"go":
                pam.close()  # the session did not start: PAM's ends all the same
                os._exit(255)
            env = spec.get("env")  # a child that starts as root gets exactly its own
            if env is None:
                env = merged(spec["before"], pam.environment, spec["after"])
            os.set_inheritable(status_fd, False)  # closed by the command's exec: EOF says so
            pid = os.fork()
            if pid == 0:
                _command(spec, env, status_fd)
            _say(status_fd, f"pid {pid}")
            os.close(status_fd)
            _let_go_of_the_session()
            _, status = os.waitpid(pid, 0)
        finally:
            pam.close()
    _exit_as(status)


def _line(pipe: Any) -> bytes:
    """One line from ``pipe`` (without its newline; what came before EOF, if no newline)."""
    data = bytearray()
    while not data.endswith(b"\n"):
        byte = pipe.read(1)
        if not byte:
            break
        data += byte
    return bytes(data).rstrip(b"\n")


def _say(fd: int, line: str) -> None:
    data = (line + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def _command(spec: dict[str, Any], env: dict[str, str], status_fd: int) -> NoReturn:
    """The forked child: become the login, in a session of its own, and exec the command."""
    try:
        for sig in (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)  # Python ignores SIGPIPE: commands must not
        os.setsid()
        if spec["pty"]:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if os.geteuid() == 0 and spec["uid"] != 0:
            os.setgid(spec["gid"])
            os.initgroups(spec["user"], spec["gid"])
            os.setuid(spec["uid"])
        try:
            os.chdir(spec["home"])
        except OSError:
            os.chdir("/")
        os.execve(spec["argv"][0], spec["argv"], env)  # noqa: S606 - the argv is the session's
    except BaseException as exc:  # the forked child must never return
        with contextlib.suppress(BaseException):
            _say(status_fd, f"error {spec['argv'][0]}: {exc}")
        os._exit(127)


def _let_go_of_the_session() -> None:
    """Hold none of the session's stdio: its end is the command's (and its jobs')."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _exit_as(status: int) -> NoReturn:
    """Exit as the command did: its code, or its signal raised again on the launcher."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command's core, not ours
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(sys.argv[1:])

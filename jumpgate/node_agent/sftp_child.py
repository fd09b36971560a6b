"""The node's SFTP server as a child process: how the agent starts it, how it becomes the login.

The agent runs it with its own interpreter and its own copy of Jumpgate (``argv``), so a node
needs no OpenSSH ``sftp-server`` (docs/decisions/0029). The child starts as the agent's user
and becomes the login before it reads a byte of the session: supplementary groups, group,
then user, all three ids of each, checked after (it refuses to serve if it could regain
root), then the login's home as its directory, as ``sessions.Account.spawn_options`` gives a
command. It switches itself rather than being started as the login because the agent's
interpreter and packages may be where the login cannot read (a venv under ``/root``); it reads
nothing the session sends before the switch. ``-I`` keeps the login's environment, its home
and the working directory out of the interpreter's path.
"""

import argparse
import os
import struct
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import jumpgate
from jumpgate.node_agent import sftp_codec as wire
from jumpgate.node_agent.sftp_codec import BadMessage
from jumpgate.node_agent.sftp_server import Server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(jumpgate.__file__)))
"""Where the agent's own ``jumpgate`` package is found: the child runs the same code."""
BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from jumpgate.node_agent.sftp_child import main; sys.exit(main(sys.argv[2:]))"
)
SPAWN_OPTIONS: dict[str, Any] = {
    "cwd": "/",
    "user": None,
    "group": None,
    "extra_groups": None,
    "start_new_session": True,
}
"""How the agent starts the child: as itself, from ``/``, the child switching itself (``main``);
in a session of its own, so a lost client's hangup reaches it as it reaches a command."""


def environment() -> dict[str, str]:
    """The child's environment: the agent's ``TZ`` (its ``ls -l`` times) and nothing of the
    session's. The child starts as root, and a dynamic linker obeys ``LD_PRELOAD``,
    ``LD_DEBUG_OUTPUT``, ``GCONV_PATH``... of a root process that is not setuid: a client's
    ``env`` requests (an ``AcceptEnv`` of ``*``) or PAM's (``pam_env user_readenv=1``, Debian's)
    would run or write as root. sshd starts ``sftp-server`` as the login; this child is not
    the login until ``become``."""
    return {"TZ": os.environ["TZ"]} if "TZ" in os.environ else {}


REPLIES_HELD = 4 * wire.MAX_PACKET
"""Replies held before they are written: one read of requests may ask for a thousand times
that (READs), which sftp-server's bounded output queue never holds at once either."""


class Login(Protocol):
    """The account a session runs as (``sessions.Account``)."""

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...

    @property
    def home(self) -> str: ...


def standard_symlink(client_version: str, server_version: str) -> bool:
    """Whether this client sends SYMLINK's paths in the order the draft gives (link, then
    target): asyncssh's does, unless the server calls itself OpenSSH or paramiko (the node
    calls itself ``OpenSSH_compatible``, decision 0027: then asyncssh sends OpenSSH's order);
    every other client is taken to send OpenSSH's order, as OpenSSH's server takes them."""
    if "AsyncSSH" not in client_version:
        return False
    return not any(name in server_version for name in ("OpenSSH", "paramiko"))


def argv(login: Login, client_version: str = "", server_version: str = "") -> list[str]:
    """The child's command line for a session of ``login`` from a client that announced
    ``client_version``: run it with ``SPAWN_OPTIONS`` and a clean environment."""
    switch: list[str] = []
    if os.geteuid() == 0 and login.uid != 0:
        groups = os.getgrouplist(login.name, login.gid)
        switch = ["--uid", str(login.uid), "--gid", str(login.gid)]
        switch += ["--groups", ",".join(str(group) for group in groups)]
    standard = ["--standard-symlink"] if standard_symlink(client_version, server_version) else []
    return [sys.executable, "-I", "-c", BOOT, ROOT, *switch, "--home", login.home, *standard]


def become(uid: int, gid: int, groups: Sequence[int]) -> None:
    """Drop to the login for good; ``PermissionError`` if any way back to root is left."""
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError("the user switch did not take")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PermissionError("root could be regained after the user switch")


def serve(server: Server, stdin: int = 0, stdout: int = 1) -> int:
    """Answer requests from ``stdin`` on ``stdout`` until the client's EOF (0); 1 on a stream
    that is not SFTP (a packet over the limit, a request before INIT), as sftp-server ends."""
    buffer = bytearray()
    try:
        while chunk := os.read(stdin, 4 * wire.MAX_PACKET):
            buffer += chunk
            replies, held, used = [], 0, 0
            while len(buffer) - used >= 4:
                (length,) = struct.unpack_from(">I", buffer, used)
                if length > wire.MAX_PACKET or length == 0:
                    return 1
                if len(buffer) - used < 4 + length:
                    break
                reply = server.answer(bytes(buffer[used + 4 : used + 4 + length]))
                used += 4 + length
                if reply is not None:
                    replies.append(reply)
                    held += len(reply)
                if held >= REPLIES_HELD:  # sent, the pipe's backpressure bounding the rest
                    _write_all(stdout, b"".join(replies))
                    replies, held = [], 0
            del buffer[:used]
            _write_all(stdout, b"".join(replies))
        return 0
    except (BadMessage, OSError):  # not SFTP, or the agent's end of the pipes is gone
        return 1
    finally:
        server.close_all()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jumpgate-sftp", description=__doc__)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--groups", default="")
    parser.add_argument("--home", default="/")
    parser.add_argument("--standard-symlink", action="store_true")
    return parser


def main(args: Sequence[str]) -> int:
    """Become the login, go home and serve SFTP on stdin/stdout until the client is done."""
    options = _parser().parse_args(args)
    if options.uid is not None:
        groups = [int(group) for group in options.groups.split(",") if group]
        try:
            become(options.uid, options.gid, groups)
        except OSError as exc:
            sys.stderr.write(f"sftp refused: could not become the login: {exc}\n")
            return 1
    try:
        os.chdir(options.home)
    except OSError:
        os.chdir("/")  # as a command whose home is gone or closed to it starts in /
    return serve(Server(standard_symlink=options.standard_symlink))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

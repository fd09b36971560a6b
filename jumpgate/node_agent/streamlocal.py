"""Unix-socket forwarding (``ssh -L port:/path``, ``ssh -R /path:host:port``), done as the login.

sshd connects to and binds a forwarded Unix socket in a process running as the login, so the
socket's permissions are the login's: ``-L 9000:/var/run/docker.sock`` reaches Docker only if
the login may. The agent runs as root; connecting or binding as root would hand any login
every socket on the node. So when the agent is root and the login is not, a short-lived
helper becomes the login (its uid, gid and groups, as sessions run; it drops root itself, so
the agent's interpreter need not be one the login may run), connects or binds, and passes
the socket back over a socketpair (``SCM_RIGHTS``). A bound socket is made with
sshd's ``StreamLocalBindMask`` (0177: mode 0600) and, as sshd leaves it, not removed after
(``StreamLocalBindUnlink no``): removing a path the login chose, as root, is how a login
would have root delete ``/etc/passwd``.
"""

import asyncio
import contextlib
import os
import socket
import sys
import weakref

from jumpgate.node_agent.sessions import Account

HELPER_SECONDS = 10.0
HELPERS_AT_ONCE = 16
"""Helpers one agent runs at once (each a Python process, for up to ``HELPER_SECONDS``: a
connect to a listener that never accepts waits that long); more wait their turn."""
BIND_MASK = 0o177
"""sshd's ``StreamLocalBindMask``: the socket is the login's alone (the helper's umask)."""

_HELPER = """
import os, socket, sys
fd, op, path, uid, gid, groups = sys.argv[1:]
back = socket.socket(fileno=int(fd))
os.setgroups([int(g) for g in groups.split(",") if g])
os.setgid(int(gid))
os.setuid(int(uid))
os.chdir("/")
made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    if op == "connect":
        made.connect(path)
    else:
        os.umask(0o177)
        made.bind(path)
        made.listen(128)
    socket.send_fds(back, [b"ok"], [made.fileno()])
except OSError as exc:
    back.sendall(("error " + (exc.strerror or str(exc))).encode())
"""


class Refused(OSError):
    """The login could not connect or bind; ``str()`` says why, as the OS said it."""


async def as_login(op: str, path: str, account: Account) -> socket.socket:
    """A Unix socket connected to (``op`` "connect") or bound and listening at (``op``
    "bind") ``path``, made with the login's permissions; ``Refused`` if the login may not."""
    if "\0" in path:  # the kernel would cut it there: another path than the one audited
        raise Refused(f"{op} {path!r}: a socket path cannot hold a NUL byte")
    if os.geteuid() != 0 or account.uid == 0:
        return await _here(op, path)
    async with _gate():
        return await _helper(op, path, account)


def _gate() -> asyncio.Semaphore:
    """The agent's bound on helpers running at once (one per event loop: the agent's)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(HELPERS_AT_ONCE)
    return gate


_gates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]"
_gates = weakref.WeakKeyDictionary()


async def _helper(op: str, path: str, account: Account) -> socket.socket:
    """``as_login``'s socket, made by a helper process that becomes the login."""
    groups = ",".join(str(g) for g in os.getgrouplist(account.name, account.gid))
    ours, theirs = socket.socketpair()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _HELPER,
            str(theirs.fileno()),
            op,
            path,
            str(account.uid),
            str(account.gid),
            groups,
            pass_fds=[theirs.fileno()],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        theirs.close()
        try:
            await asyncio.wait_for(child.wait(), HELPER_SECONDS)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise Refused(f"{op} {path}: timed out") from None
        except BaseException:  # cancelled (the connection went): the helper goes with it
            child.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(child.wait())
            raise
        ours.setblocking(False)
        try:
            message, fds, _, _ = socket.recv_fds(ours, 1024, 1)
        except BlockingIOError:
            raise Refused(f"{op} {path}: the helper said nothing") from None
    finally:
        theirs.close()
        ours.close()
    if not fds:
        raise Refused(message.decode(errors="replace").removeprefix("error ") or "refused")
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fds[0])


async def _here(op: str, path: str) -> socket.socket:
    """The same in the agent's own process (it runs as the login already, or both are root)."""
    made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        made.setblocking(False)
        if op == "connect":
            await asyncio.get_running_loop().sock_connect(made, path)
        else:
            made.bind(path)
            os.chmod(path, 0o666 & ~BIND_MASK)
            made.listen(128)
    except OSError as exc:
        made.close()
        raise Refused(exc.strerror or str(exc)) from None
    return made


def close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

"""``jump ssh`` and ``jump config``: reaching nodes through the cluster's proxy.

``jump ssh`` connects to the proxy with the login certificate, opens a channel to the node
through it and runs an SSH session end to end with the node, whose host certificate must be
signed by the tenant's host CA. ``jump config`` prints the same route for plain OpenSSH.
"""

import argparse
import asyncio
import contextlib
import os
import signal
import stat
import sys
import termios
import tty
from typing import Any

import asyncssh

from jumpgate.cli.common import profile
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jump import forwards
from jumpgate.protocol import ports
from jumpgate.protocol.channel_window import bound_receive_window
from jumpgate.protocol.names import resolve_loopback, split_host_port
from jumpgate.protocol.pipe_out import write_out

STANDARD = (0, 1, 2)
STOPPING = (signal.SIGTERM, signal.SIGHUP)
"""What ends ``jump ssh`` as it ends ssh(1): the terminal is put back, and it exits 255."""


def register(sub: Any) -> None:
    ssh = sub.add_parser("ssh", help="run a shell or a command on a node")
    ssh.add_argument("-t", dest="tty", action="store_true", default=None, help="force a PTY")
    ssh.add_argument("-T", dest="tty", action="store_false", help="disable the PTY")
    ssh.add_argument("-p", dest="port", type=int, default=22, help="node SSH port (22 or 3022)")
    ssh.add_argument("-l", dest="login", help="OS login on the node")
    forwards.register(ssh)
    ssh.add_argument("target", metavar="[LOGIN@]NODE")
    command = ssh.add_argument(
        "remote_command", nargs=argparse.REMAINDER, help="command to run (default: a shell)"
    )
    # argparse counts a REMAINDER positional as required, and so named it in the usage error
    # of a bare ``jump ssh``; it may be empty (a shell)
    command.required = False
    config = sub.add_parser("config", help="print an ssh_config block for plain OpenSSH")
    config.add_argument("--port", type=int, default=22, help=argparse.SUPPRESS)


def split_target(target: str, login: str | None, current: profile.Profile) -> tuple[str, str]:
    user, sep, host = target.rpartition("@")
    chosen = login or (user if sep else "") or (current.logins[0] if current.logins else "")
    if not chosen:
        raise CLIError("your certificate allows no login: ask an admin to add one (jumpctl users)")
    return chosen, host


def node_name(host: str, current: profile.Profile) -> str:
    """``web-1.acme.localhost`` (or with the FQDN's trailing dot) → ``web-1``; the proxy
    knows nodes by name or uuid."""
    cluster_host = current.proxy.rsplit(":", 1)[0]
    return host.removesuffix(".").removesuffix(f".{cluster_host}")


async def connect(
    current: profile.Profile, login: str, node: str, port: int, *, agent: bool = False
) -> Any:
    key = asyncssh.import_private_key(current.key_path.read_bytes())
    cert = asyncssh.import_certificate(current.certificate())
    host, proxy_port = split_host_port(current.ssh_proxy, ports.SSH)
    proxy_keys = [asyncssh.import_public_key(k) for k in current.proxy_host_keys]
    host_cas = [asyncssh.import_public_key(k) for k in current.host_ca_keys]
    try:
        proxy = await asyncssh.connect(
            resolve_loopback(host),
            proxy_port,
            username=login,
            client_keys=[(key, cert)],
            known_hosts=(proxy_keys, [], []),
            connect_timeout=20,
        )
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc) or "timed out"
        raise CLIError(
            f"cannot reach the proxy at {host}:{proxy_port} ({why}): "
            "is jumpgate start running there?"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise CLIError(
            f"the proxy refused login {login!r}: your certificate allows "
            f"{', '.join(current.logins) or 'no login'}; run jump login if it expired"
        ) from exc
    try:
        conn = await asyncssh.connect(
            node,
            port,
            tunnel=proxy,
            username=login,
            client_keys=[(key, cert)],
            known_hosts=([], host_cas, []),
            connect_timeout=20,
            # -A: the user's SSH_AUTH_SOCK, if set; without it, ~/.ssh/config's ForwardAgent
            **({"agent_forwarding": True} if agent else {}),
        )
    except asyncssh.ChannelOpenError as exc:
        proxy.close()
        raise CLIError(exc.reason) from exc
    except asyncssh.PermissionDenied as exc:
        proxy.close()
        raise CLIError(f"node {node!r} refused login {login!r}") from exc
    return proxy, conn


def _own(fd: int, mode: str) -> Any:
    """A private duplicate of a standard stream: asyncssh closes what it is given."""
    return os.fdopen(os.dup(fd), mode, buffering=0)


def _stdin(use_tty: bool) -> Any:
    """What to send as the session's input.

    Pipes, sockets and files are forwarded; the terminal only with a PTY (without one, as
    with ``ssh -n``, it is not read); anything else (``/dev/null``) is empty input.
    """
    if sys.stdin.isatty():
        return _own(0, "rb") if use_tty else asyncssh.DEVNULL
    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode):
        return _own(0, "rb")
    return asyncssh.DEVNULL


def _terminal_size(fd: int = 0) -> tuple[int, int]:
    """The terminal's columns and rows as the terminal itself says (TIOCGWINSZ), as ssh(1)
    asks it: not ``$COLUMNS``/``$LINES``, which a shell may have exported at another size
    and never updates. 80x24 when ``fd`` is no terminal or says 0."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns or 80, size.lines or 24


class TerminalWindow:
    """Follows the local terminal's size (SIGWINCH) for one session, from before the session
    is opened: a change while its channel, PTY and shell requests are in flight is sent once
    it is open (as ssh(1) does), not lost.
    """

    def __init__(self, fd: int = 0) -> None:
        self._fd = fd  # the terminal: the user's stdin
        self.size = _terminal_size(fd)  # what the session was told, or will be at its opening
        self._process: asyncssh.SSHClientProcess[bytes] | None = None

    def changed(self) -> None:
        """The terminal changed size: tell the session, once it is open."""
        size = _terminal_size(self._fd)
        if self._process is not None and size != self.size:
            self.size = size
            self._process.change_terminal_size(*size)

    def opened(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        """The session is open: from now on it hears every change, and any it missed."""
        self._process = process
        self.changed()


class Killed(Exception):
    """``jump ssh`` was told to stop (SIGTERM, SIGHUP) and has put the terminal back: it
    exits 255, as ssh(1)."""

    def __init__(self, number: int) -> None:
        super().__init__(f"killed by signal {number}")


async def _session(current: profile.Profile, args: argparse.Namespace) -> int:
    """The session, ended early by SIGTERM or SIGHUP as ssh(1) ends it: the terminal and the
    standard streams' blocking modes are put back before ``Killed`` is raised."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(number: int) -> None:
        received.append(number)
        task.cancel()

    blocking = [os.get_blocking(fd) for fd in STANDARD]
    # A signal the caller ignores (nohup, ``trap '' TERM``) stays ignored, as with ssh(1).
    handled = [n for n in STOPPING if signal.getsignal(n) is not signal.SIG_IGN]
    for number in handled:
        loop.add_signal_handler(number, stop, number)
    try:
        return await _attached(current, args)
    except asyncio.CancelledError:
        if received:
            raise Killed(received[0]) from None
        raise
    finally:
        for number in handled:
            loop.remove_signal_handler(number)
        for fd, mode in zip(STANDARD, blocking, strict=True):
            # The copies and asyncssh's reader made them non-blocking; the commands after
            # jump ssh in a pipe or at the terminal share them (ssh(1) puts them back too).
            with contextlib.suppress(OSError):
                os.set_blocking(fd, mode)


class _Tail:
    """A session's output stream, remembering its last line: the node's ``jumpgate: ...``
    line (a lock, the agent stopping) already says why a session ended."""

    def __init__(self, source: asyncssh.SSHReader[bytes]) -> None:
        self._source = source
        self._tail = b""

    async def read(self, n: int = -1) -> bytes:
        data = await self._source.read(n)
        self._tail = (self._tail + data)[-1024:]
        return data

    def explained(self) -> bool:
        lines = self._tail.replace(b"\r", b"").strip().splitlines()
        return bool(lines) and lines[-1].startswith(b"jumpgate: ")


async def _attached(current: profile.Profile, args: argparse.Namespace) -> int:
    login, host = split_target(args.target, args.login, current)
    command = " ".join(args.remote_command) if args.remote_command else None
    use_tty = args.tty if args.tty is not None else (command is None and sys.stdin.isatty())
    wanted = forwards.wanted(args)  # checked again: ``ssh`` did before connecting
    proxy, conn = await connect(
        current, login, node_name(host, current), args.port, agent=args.forward_agent
    )
    async with proxy, conn:
        await forwards.start(conn, wanted)
        if args.no_command:
            await conn.wait_closed()  # forwarding only, until the node or a signal ends it
            return 0
        term = os.environ.get("TERM", "xterm-256color") if use_tty else None
        window = TerminalWindow()
        loop = asyncio.get_running_loop()
        follow = use_tty and sys.stdin.isatty()
        if follow:
            loop.add_signal_handler(signal.SIGWINCH, window.changed)
        saved = None
        output: asyncio.Future[Any] | None = None
        try:
            process = await conn.create_process(
                command,
                term_type=term,
                term_size=window.size if use_tty else None,
                stdin=_stdin(use_tty),
                encoding=None,
            )
            bound_receive_window(process.channel)
            # Not asyncssh's redirect: it can drop the tail of the output (see pipe_out).
            said = (_Tail(process.stdout), _Tail(process.stderr))
            output = asyncio.gather(write_out(said[0], os.dup(1)), write_out(said[1], os.dup(2)))
            if follow:
                window.opened(process)
                saved = termios.tcgetattr(0)
                tty.setraw(0, termios.TCSADRAIN)  # as ssh(1): what was typed ahead is kept
            # Not process.wait(): it reads stdout and stderr itself, taking from the copies.
            await output  # all of it written before the exit status is returned
            await process.wait_closed()
        finally:
            if output is not None and not output.done():
                output.cancel()
            if saved is not None:
                # A terminal already gone (its window closed: the SIGHUP case) cannot be
                # put back; ssh(1) ignores that too.
                with contextlib.suppress(termios.error, OSError):
                    termios.tcsetattr(0, termios.TCSADRAIN, saved)
            if follow:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signal.SIGWINCH)
    if process.exit_status is not None:
        return int(process.exit_status)
    if process.exit_signal is None and not any(tail.explained() for tail in said):
        # As ssh(1)'s "Connection to HOST closed by remote host.": without it, a session the
        # proxy or node cut (the platform stopped) ended in silence
        print(
            f"jump: the session to {host} ended without an exit status "
            "(the proxy or node closed it)",
            file=sys.stderr,
        )
    return 255


def ssh(args: argparse.Namespace) -> int:
    """Entry of ``jump ssh``: the remote command's exit status (255 if it has none, or
    ``jump ssh`` was told to stop, as ssh(1))."""
    forwards.wanted(args)  # a bad -L, -R or -D is said before anything else
    current = profile.current()
    if not current.ssh_proxy:
        raise CLIError("this login predates SSH support: run jump login again")
    try:
        return asyncio.run(_session(current, args))
    except Killed:
        # Nothing printed, as ssh(1) prints nothing then: a stderr nobody reads would block.
        return 255
    except (OSError, asyncssh.Error) as exc:
        raise CLIError(f"ssh to {args.target} failed: {exc}") from exc


def config(_: argparse.Namespace) -> int:
    """Entry of ``jump config``: an ssh_config block routing ``*.<cluster>`` via the proxy."""
    current = profile.current()
    cluster_host = current.proxy.rsplit(":", 1)[0]
    ssh_host, ssh_port = split_host_port(current.ssh_proxy, ports.SSH)
    alias = f"jumpgate-proxy.{cluster_host}"
    directory = current.directory
    print(f"# Jumpgate cluster {current.tenant} ({current.proxy}), logged in as {current.user}")
    print(f"# Use: ssh LOGIN@NODE.{cluster_host}")
    print(f"#  or: ssh -J LOGIN@{alias} LOGIN@NODE.{cluster_host}")
    print("# (the full names: this block and the host CA it trusts cover those only)")
    print(f"Host {alias}")
    print(f"    HostName {resolve_loopback(ssh_host)}")
    print(f"    Port {ssh_port}")
    print(f"    HostKeyAlias [{ssh_host}]:{ssh_port}")
    print(f"Host *.{cluster_host} !{alias}")
    print(
        f"    ProxyCommand ssh -F /dev/null -i {directory / 'key'} -o CertificateFile="
        f"{directory / 'key-cert.pub'} -o UserKnownHostsFile={directory / 'known_hosts'} "
        f"-o HostKeyAlias=[{ssh_host}]:{ssh_port} -p {ssh_port} %r@{resolve_loopback(ssh_host)} "
        "-s proxy:%h:%p"
    )
    print(f"Host {alias} *.{cluster_host}")
    print(f"    IdentityFile {directory / 'key'}")
    print(f"    CertificateFile {directory / 'key-cert.pub'}")
    print("    IdentitiesOnly yes")
    print(f"    UserKnownHostsFile {directory / 'known_hosts'}")
    return 0


COMMANDS = {"ssh": ssh, "config": config}

"""``jump ssh -L``, ``-R`` and ``-D``: port forwards as ssh(1) writes and makes them.

A spec is checked before anything is connected; a bad one is a one-line error naming the
form. Forwards are made once the connection to the node is up; one the node or this machine
refuses ends ``jump ssh`` with a one-line error (ssh's ``ExitOnForwardFailure yes``), since
a forward that silently failed is the surprise worth avoiding.
"""

import sys
from dataclasses import dataclass
from typing import Any

import asyncssh

from jumpgate.cli.common.errors import CLIError

DEFAULT_BIND = "localhost"
"""Where a forward listens when its spec names no address: the loopback (ssh's default)."""
EVERY_ADDRESS = ("*", "")
"""A bind address meaning all of the machine's (for ``-R``, the node still binds its
loopback, as sshd's ``GatewayPorts no`` does)."""

_FORMS = {
    "-L": "[bind_address:]port:host:hostport",
    "-R": "[bind_address:]port:host:hostport",
    "-D": "[bind_address:]port",
}


@dataclass(frozen=True)
class Forward:
    """One ``-L``, ``-R`` or ``-D`` as given."""

    option: str  # -L, -R or -D
    spec: str  # as typed, for messages
    bind: str
    port: int
    host: str = ""  # the far end (not for -D)
    host_port: int = 0


def _fields(spec: str) -> list[str]:
    """``spec`` split at colons, an address in brackets kept whole (``[::1]:8080``)."""
    fields: list[str] = []
    rest = spec
    while rest:
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise ValueError("unclosed [")
            fields.append(rest[1:end])
            rest = rest[end + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError("':' expected after ]")
            rest = rest[1:]
            continue
        field, _, rest = rest.partition(":")
        fields.append(field)
    if spec.endswith(":"):
        fields.append("")
    return fields


def _port(text: str, *, zero: bool) -> int:
    if not text.isdigit() or not (0 if zero else 1) <= int(text) <= 65535:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def _bind(text: str) -> str:
    return "" if text in EVERY_ADDRESS else text


def parse(option: str, spec: str) -> Forward:
    """One forward from its option and spec; ``CLIError`` (one line) if malformed."""
    try:
        fields = _fields(spec)
        if option == "-D":
            if len(fields) not in (1, 2):
                raise ValueError("one or two fields")
            bind = _bind(fields[0]) if len(fields) == 2 else DEFAULT_BIND
            return Forward(option, spec, bind, _port(fields[-1], zero=False))
        if len(fields) not in (3, 4):
            raise ValueError("three or four fields")
        bind = _bind(fields[0]) if len(fields) == 4 else DEFAULT_BIND
        port, host, host_port = fields[-3:]
        if not host:
            raise ValueError("no host")
        return Forward(
            option,
            spec,
            bind,
            _port(port, zero=option == "-R"),  # -R 0:...: the node picks a port
            host,
            _port(host_port, zero=False),
        )
    except ValueError as exc:
        raise CLIError(f"bad {option} {spec!r} ({exc}): write {option} {_FORMS[option]}") from None


def parse_all(local: list[str], remote: list[str], dynamic: list[str]) -> list[Forward]:
    """Every forward of a command line, in the order ssh makes them (-L, -R, -D)."""
    return [
        *(parse("-L", s) for s in local),
        *(parse("-R", s) for s in remote),
        *(parse("-D", s) for s in dynamic),
    ]


async def start(conn: asyncssh.SSHClientConnection, forwards: list[Forward]) -> list[Any]:
    """Make every forward on ``conn``; their listeners (closed with the connection).
    ``CLIError`` if one cannot be made."""
    made: list[Any] = []
    for forward in forwards:
        try:
            made.append(await _make(conn, forward))
        except asyncssh.ChannelListenError as exc:
            raise CLIError(
                f"the node refused {forward.option} {forward.spec} ({exc}): "
                "the port may be taken, or below 1024 for a login that is not root; "
                "choose another"
            ) from None
        except OSError as exc:
            raise CLIError(
                f"cannot listen for {forward.option} {forward.spec} on "
                f"{forward.bind}:{forward.port} ({exc.strerror or exc}): choose another port"
            ) from None
    for listener, forward in zip(made, forwards, strict=True):
        if forward.option == "-R" and forward.port == 0:
            print(
                f"Allocated port {listener.get_port()} for remote forward to "
                f"{forward.host}:{forward.host_port}",
                file=sys.stderr,
            )
    return made


async def _make(conn: asyncssh.SSHClientConnection, forward: Forward) -> Any:
    if forward.option == "-L":
        return await conn.forward_local_port(
            forward.bind, forward.port, forward.host, forward.host_port
        )
    if forward.option == "-R":
        return await conn.forward_remote_port(
            forward.bind, forward.port, forward.host, forward.host_port
        )
    return await conn.forward_socks(forward.bind, forward.port)


def register(ssh: Any) -> None:
    """``jump ssh``'s forwarding options, spelt as ssh(1)'s."""
    ssh.add_argument(
        "-L",
        dest="local_forwards",
        action="append",
        default=[],
        metavar=_FORMS["-L"],
        help="forward a local port to host:hostport as the node reaches it (repeatable)",
    )
    ssh.add_argument(
        "-R",
        dest="remote_forwards",
        action="append",
        default=[],
        metavar=_FORMS["-R"],
        help="forward a port on the node's loopback to host:hostport from here (repeatable)",
    )
    ssh.add_argument(
        "-D",
        dest="dynamic_forwards",
        action="append",
        default=[],
        metavar=_FORMS["-D"],
        help="a local SOCKS proxy whose connections leave from the node (repeatable)",
    )
    ssh.add_argument("-N", dest="no_command", action="store_true", help="run no command: forward")
    ssh.add_argument("-A", dest="forward_agent", action="store_true", help="forward your agent")


def wanted(args: Any) -> list[Forward]:
    """The forwards ``args`` ask for, checked (``CLIError`` for a bad spec, or ``-N`` with a
    command)."""
    if args.no_command and args.remote_command:
        raise CLIError("-N runs no command: drop the command, or -N")
    return parse_all(args.local_forwards, args.remote_forwards, args.dynamic_forwards)

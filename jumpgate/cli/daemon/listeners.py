"""The daemon's listen addresses, tried before anything starts: a mistake in one is said in
one line naming its key and what is wrong with it (a name that does not resolve, an address
this host does not have, a port in use), before any state is made in the data dir."""

import errno
import ipaddress
import socket
from typing import Any

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.daemon.config import Config
from jumpgate.protocol.names import split_host_port


def make_up_elsewhere(config: Config) -> str:
    """``make up`` on other ports (its Makefile variables): each of the demo's a thousand
    up (3080 becomes 4080), as the README suggests."""
    keys = {"WEB_PORT": "web_listen_addr", "SSH_PORT": "ssh_listen_addr"}
    keys["TUNNEL_PORT"] = "tunnel_listen_addr"
    ports = {name: config.port_of(key) for name, key in keys.items()}
    moved = {name: port + 1000 if 0 < port < 64535 else port for name, port in ports.items()}
    return "make up " + " ".join(f"{name}={port}" for name, port in moved.items())


def check(config: Config, *, demo: bool = False) -> None:
    """``CLIError`` for the first listen address of ``config`` this host cannot listen on.

    Each is bound once and let go at once (never listened on, so nothing lingers); the
    daemon binds them again a moment later, and still says so if that fails."""
    keys = ["web_listen_addr", "ssh_listen_addr", "tunnel_listen_addr"]
    keys += [key for key in ("peer_listen_addr", "diag_addr") if getattr(config, key)]
    elsewhere = make_up_elsewhere(config) if demo else ""
    taken: dict[tuple[int, str, int], str] = {}  # (family, address, port): the key binding it
    for key in keys:
        _try(key, getattr(config, key), elsewhere, taken)


_Found = list[tuple[Any, Any, int, str, tuple[Any, ...]]]
"""What ``socket.getaddrinfo`` gives: family, type, protocol, name, socket address."""


def _named_twice(
    key: str, address: str, found: _Found, taken: dict[tuple[int, str, int], str]
) -> None:
    """Refuse ``address`` if an earlier key binds the same port there (or on every address):
    the probe below would pass (nothing listens yet), and the daemon fail once started."""
    bound = [(int(family), _ip(where), int(where[1])) for family, _, _, _, where in found]
    for family, ip, port in bound:
        if port == 0:
            continue  # each 0 is a port of its own
        for (other_family, other_ip, other_port), other in taken.items():
            same = ip == other_ip or _unspecified(ip) or _unspecified(other_ip)
            if other_port == port and other_family == family and same:
                raise CLIError(
                    f"{key}: {address} is also {other}: give each listener a port of its own "
                    f"({_flag(key)})"
                )
    for where in bound:
        taken.setdefault(where, key)


def _try(key: str, address: str, elsewhere: str, taken: dict[tuple[int, str, int], str]) -> None:
    host, port = split_host_port(address, 0, listen=True)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise CLIError(
            f"{key}: cannot listen on {address}: {host} does not resolve to an address of "
            f"this host: give one of its IP addresses, e.g. 127.0.0.1:{port}"
        ) from None
    _named_twice(key, address, found, taken)
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as probe:
            # as asyncio's servers bind: a port left in TIME_WAIT is no conflict
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(where)
            except OSError as exc:
                raise CLIError(why(key, address, exc, elsewhere=elsewhere)) from None


def why(key: str, address: str, exc: OSError, *, elsewhere: str = "") -> str:
    """One line saying why ``key`` cannot listen on ``address`` and what to do;
    ``elsewhere``: the command that runs the demo on other ports (``make up ...``)."""
    host, port = split_host_port(address, 0, listen=True)
    flag = _flag(key)
    if exc.errno == errno.EADDRINUSE:
        instead = f"; with make up: {elsewhere}" if elsewhere else ""
        return (
            f"{key}: {address} is in use: stop what uses it or choose another port "
            f"({flag}){instead}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{key}: cannot listen on {address}: {host} is no address of this host: give one "
            f"of its IP addresses, e.g. 127.0.0.1:{port}"
        )
    if exc.errno == errno.EACCES:
        return (
            f"{key}: cannot listen on {address}: ports below 1024 need root: choose a port "
            f"from 1024 ({flag})"
        )
    return f"{key}: cannot listen on {address}: {exc.strerror or exc} ({flag})"


def _flag(key: str) -> str:
    """How ``jumpgate start`` takes ``key``: its flag, or the config key for peering."""
    return f"--{key.replace('_', '-')}" if key != "peer_listen_addr" else key


def _ip(where: tuple[Any, ...]) -> str:
    """A socket address's IP, with its interface when it is IPv6 link-local (``%2``)."""
    scope = where[3] if len(where) == 4 else 0
    return f"{where[0]}%{scope}" if scope else str(where[0])


def _unspecified(ip: str) -> bool:
    """Whether ``ip`` is every address of its family (0.0.0.0, ::)."""
    return ipaddress.ip_address(ip.split("%")[0]).is_unspecified

"""A session's environment, built as OpenSSH's sshd builds it (``do_setup_env``, session.c).

In sshd's order, each step over the one before:

1. the variables the client asked for (``env`` requests: ``SendEnv``/``SetEnv``) whose name
   matches one of the node's ``accept_env`` patterns (sshd's ``AcceptEnv``; default ``LANG
   LC_*``), at most ``MAX_CLIENT_VARIABLES`` of them;
2. the login's own: ``USER``, ``LOGNAME``, ``HOME``, ``PATH``, ``MAIL`` (not with PAM:
   ``pam_mail`` sets it there), ``SHELL``, ``TZ`` (the agent's, if it has one), ``TERM`` (PTY);
   a client never sets these, even where a pattern names them, as with sshd;
3. what the PAM session gave (``pam_getenvlist``), but never ``SSH_CONNECTION*`` or
   ``SSH_AUTH_INFO*`` (sshd's denylist);
4. ``SSH_CLIENT``, ``SSH_CONNECTION`` and, on a PTY, ``SSH_TTY``.

``LANG``: sshd sets none, and neither does the node (the client's ``SendEnv LANG``, Debian's
default, or PAM's ``/etc/default/locale`` give one); the agent's own locale is not the
session's (sshd parity, decision 0033).

Where the user is comes from ``origin``: the one place that knows (see its docstring).
"""

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jumpgate.node_agent.origin import origin as proxy_said
from jumpgate.node_agent.pam_session import merged

DEFAULT_ACCEPT_ENV = ("LANG", "LC_*")
"""The client variables a node takes unless configured otherwise (Debian's sshd_config)."""
MAX_CLIENT_VARIABLES = 128
"""sshd ignores env requests past this many; so does the node."""
MAIL_DIR = "/var/mail"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"
"""Debian's sshd's PATH for a login other than root (its ``--with-default-path``)."""
SUPERUSER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PATTERN = re.compile(r"^[A-Za-z0-9_*?]+$")
"""What an ``accept_env`` pattern may hold: a variable name with ``*`` and ``?``."""


@dataclass(frozen=True)
class Origin:
    """Where a connection comes from and where it arrived: the user's address and port, and
    the node's (sshd's ``SSH_CONNECTION``)."""

    client_host: str
    client_port: int
    server_host: str
    server_port: int


UNKNOWN = Origin("UNKNOWN", 65535, "UNKNOWN", 65535)
"""What sshd says of a connection that is not on a socket."""


def origin(conn: Any) -> Origin:
    """Where ``conn`` (the user's SSH connection on the node) comes from.

    The user's address is the one the proxy said (``origin.origin``, decision 0030); from a
    proxy of an older release, the node's own end of what carried the connection. The
    server's is the node's own end: its view, as sshd's is."""
    peer = conn.get_extra_info("peername") or ()
    local = conn.get_extra_info("sockname") or ()
    client_host, client_port = _address(peer)
    server_host, server_port = _address(local)
    said = proxy_said(conn)
    if said.client_addr:
        client_host, client_port = said.client_addr, said.client_port
    return Origin(client_host, client_port, server_host, server_port)


def _address(pair: Any) -> tuple[str, int]:
    if isinstance(pair, tuple) and len(pair) >= 2 and pair[0]:
        host, port = str(pair[0]), pair[1]
        return host, port if isinstance(port, int) and 0 <= port <= 65535 else 65535
    return UNKNOWN.client_host, UNKNOWN.client_port


def check_pattern(pattern: str) -> str:
    """``pattern`` if it can name variables (``LC_*``); ``ValueError`` saying why not."""
    if not PATTERN.match(pattern):
        raise ValueError(
            f"{pattern[:40]!r} is not a variable name pattern: use letters, digits, _ and * or ?"
        )
    return pattern


def accepted(requested: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    """The client's variables a pattern names, in the order asked, at most
    ``MAX_CLIENT_VARIABLES`` (sshd's ``AcceptEnv``; matching is case-sensitive, as sshd's)."""
    kept: dict[str, str] = {}
    patterns = tuple(patterns)
    for name, value in requested.items():
        if len(kept) >= MAX_CLIENT_VARIABLES:
            break
        if "=" in name or "\0" in name or "\0" in value:
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
            kept[name] = value
    return kept


class Login(Protocol):
    """The OS user a session runs as (``sessions.Account``)."""

    @property
    def name(self) -> str: ...

    @property
    def uid(self) -> int: ...

    @property
    def extra_env(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def home(self) -> str: ...

    @property
    def shell(self) -> str: ...


@dataclass(frozen=True)
class SessionContext:
    """What a session's environment takes beyond its login: the client's accepted variables,
    where it comes from, and whether PAM runs it (then ``MAIL`` is PAM's)."""

    client: Mapping[str, str]
    origin: Origin = UNKNOWN
    pam: bool = False


def build(
    login: Login,
    *,
    context: SessionContext | None = None,
    term: str | None = None,
    tty: str | None = None,
    pam_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a session's command, in sshd's order (see the module docstring)."""
    before, after = layers(login, context=context, term=term, tty=tty)
    return merged(before, pam_env or {}, after)


def layers(
    login: Login,
    *,
    context: SessionContext | None = None,
    term: str | None = None,
    tty: str | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """What goes under PAM's environment (the client's and the login's) and over it
    (``SSH_CLIENT``, ``SSH_CONNECTION``, ``SSH_TTY``, ``SSH_AUTH_SOCK``), as sshd layers them."""
    context = context if context is not None else SessionContext({})
    env = dict(context.client)
    env.update(
        USER=login.name,
        LOGNAME=login.name,
        HOME=login.home,
        PATH=SUPERUSER_PATH if login.uid == 0 else USER_PATH,
    )
    if not context.pam:
        env["MAIL"] = f"{MAIL_DIR}/{login.name}"
    env["SHELL"] = login.shell
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    if term:
        env["TERM"] = term
    where = context.origin
    after = {
        "SSH_CLIENT": f"{where.client_host} {where.client_port} {where.server_port}",
        "SSH_CONNECTION": (
            f"{where.client_host} {where.client_port} {where.server_host} {where.server_port}"
        ),
    }
    if tty:
        after["SSH_TTY"] = tty
    after.update(login.extra_env)  # the session's own: SSH_AUTH_SOCK with ``ssh -A``
    return env, after

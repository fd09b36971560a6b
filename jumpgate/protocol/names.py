"""Names of tenants, users and logins, and how a hostname names a tenant.

A tenant is addressed as ``NAME.<public-addr>`` (``acme.localhost``); its name is one DNS
label so that it can be a subdomain. ``*.localhost`` is loopback by RFC 6761, and Jumpgate's
clients resolve it so even where the system resolver does not.
"""

import re
from collections.abc import Iterable
from typing import Protocol, TypeVar

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USER = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,127}$")
_LOGIN = re.compile(r"^[a-z_][a-z0-9._-]{0,31}$")
MAX_NODENAME = 253
"""A node's name is a hostname: at most 253 characters."""
_NODENAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_PROXY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")

TENANT_NAME_HELP = "lowercase letters, digits and '-', at most 63, not starting or ending with '-'"


def check_tenant_name(name: str) -> str:
    """Return ``name`` if it is a DNS label, else raise ``ValueError`` saying what is allowed."""
    if not _DNS_LABEL.fullmatch(name):
        raise ValueError(f"tenant name {name!r} is not a DNS label: use {TENANT_NAME_HELP}")
    return name


def check_user_name(name: str) -> str:
    """Return ``name`` if it is a valid user name (e.g. ``alice`` or ``alice@example.com``)."""
    if not _USER.fullmatch(name):
        raise ValueError(
            f"user name {name!r} is not valid: use lowercase letters, digits and . _ @ + -"
        )
    return name


def check_login(login: str) -> str:
    """Return ``login`` if it is a valid POSIX login name."""
    if not _LOGIN.fullmatch(login):
        raise ValueError(
            f"login {login!r} is not a valid OS user name: use lowercase letters, digits, _ . -"
        )
    return login


def check_nodename(name: str) -> str:
    """Return ``name`` if it can be a node's name (a hostname)."""
    if not _NODENAME.fullmatch(name):
        raise ValueError(f"node name {name!r} is not a valid hostname")
    return name


def check_proxy_id(proxy_id: str) -> str:
    """Return ``proxy_id`` if it can name a proxy (a uuid, or a short DNS-safe name)."""
    if not _PROXY_ID.fullmatch(proxy_id):
        raise ValueError(f"proxy id {proxy_id!r} is not lowercase letters, digits and '-'")
    return proxy_id


class UnknownNode(LookupError):
    """No online node answers to that name in the tenant."""


class AmbiguousNode(ValueError):
    """Several online nodes share a name; the message lists their uuids."""


class NamedNode(Protocol):
    @property
    def host_id(self) -> str: ...

    @property
    def nodename(self) -> str: ...


N = TypeVar("N", bound=NamedNode)


MAX_SHOWN = 64
"""How much of a name a user typed is echoed back in an error: enough to recognise it."""


def shown(name: str) -> str:
    """``name`` as an error may repeat it: its first ``MAX_SHOWN`` characters, then ``…``.

    Names come from users and nodes unchecked; a refusal must stay one short line whatever
    was sent (a 100,000-character name is otherwise echoed back whole).
    """
    return name if len(name) <= MAX_SHOWN else name[:MAX_SHOWN] + "…"


def node_name(tenant: str, name: str, public_addr: str = "") -> str:
    """The name or uuid a host names within ``tenant``, lower-cased: ``web-1``,
    ``web-1.acme``, ``web-1.acme.<public-addr>`` and each with the trailing dot of a fully
    qualified name (``web-1.acme.localhost.``) all name ``web-1``."""
    wanted = name.lower().removesuffix(".")
    addr = public_addr.strip(".").lower()
    for suffix in (f".{tenant}.{addr}" if addr else None, f".{tenant}"):
        if suffix is not None and wanted.endswith(suffix):
            return wanted[: -len(suffix)]
    return wanted


def pick_node(tenant: str, name: str, online: Iterable[N], public_addr: str = "") -> N:
    """The node of ``online`` that ``name`` names (any form ``node_name`` takes); a uuid wins
    over a name. ``UnknownNode`` or ``AmbiguousNode``, each with the line to show."""
    wanted = node_name(tenant, name, public_addr)
    nodes = list(online)
    matches = [n for n in nodes if n.host_id == wanted]
    matches = matches or [n for n in nodes if n.nodename.lower() == wanted]
    if not matches:
        raise UnknownNode(f"node {shown(name)!r} is not online in cluster {tenant!r}: see jump ls")
    if len(matches) > 1:
        ids = ", ".join(sorted(n.host_id for n in matches))
        raise AmbiguousNode(f"{len(matches)} nodes are named {shown(name)!r}: use a uuid ({ids})")
    return matches[0]


def split_host_port(addr: str, default_port: int, *, listen: bool = False) -> tuple[str, int]:
    """Split ``host[:port]`` (``[v6]:port`` too); raise ``ValueError`` on a bad port.

    A listen address may name port 0: any free port.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        host, port = addr, ""
    host = host.strip("[]")
    if not host:
        raise ValueError(f"address {addr!r} has no host: use HOST or HOST:PORT")
    if not port:
        return host, default_port
    if not port.isdigit() or not (0 if listen else 1) <= int(port) < 65536:
        raise ValueError(f"address {addr!r} has an invalid port: use HOST:PORT with 1-65535")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port`` as ``split_host_port`` reads it back: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tenant_from_host(host: str, public_addr: str) -> str | None:
    """The tenant a ``Host`` header or SNI names under ``public_addr``, or ``None``.

    ``acme.localhost:3080`` under ``localhost`` is ``acme``; the bare public address and
    anything outside it name no tenant.
    """
    hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    hostname = hostname.strip(".").lower()
    suffix = "." + public_addr.strip(".").lower()
    if not hostname.endswith(suffix):
        return None
    label = hostname[: -len(suffix)]
    return label if _DNS_LABEL.fullmatch(label) else None


def resolve_loopback(hostname: str) -> str:
    """Resolve ``localhost`` and ``*.localhost`` to 127.0.0.1 (RFC 6761); others unchanged."""
    lowered = hostname.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return "127.0.0.1"
    return hostname

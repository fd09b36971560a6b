"""How the security tests reach a platform as a user or a raw client would."""

import select
import socket
from pathlib import Path
from typing import Any

import asyncssh

from tests.e2e.conftest import Site


def user_ssh_options(site: Site, username: str) -> dict[str, Any]:
    """asyncssh options of the site's logged-in admin (its key and certificate), for a
    connection to the proxy and, through it, to a node."""
    profile = next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())
    return {
        "username": username,
        "client_keys": [
            (
                asyncssh.read_private_key(profile / "key"),
                asyncssh.read_certificate(profile / "key-cert.pub"),
            )
        ],
        "known_hosts": None,
        "config": [],
        "agent_path": None,
    }


def dial(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A plain TCP connection to a loopback listener, from ``source``."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def refused(sock: socket.socket, seconds: float = 2.0) -> bool:
    """Whether the server closed a fresh connection straight away."""
    readable, _, _ = select.select([sock], [], [], seconds)
    if not readable:
        return False
    try:
        return sock.recv(1024, socket.MSG_PEEK) == b""
    except OSError:
        return True

"""How the security tests reach a platform as a raw client would."""

import select
import socket
import ssl


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


def insecure_tls() -> ssl.SSLContext:
    """A client TLS context that takes any certificate: the local platform's is self-signed,
    and these tests attack it, not its certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context

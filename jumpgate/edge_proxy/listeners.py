"""Listening sockets bound before any server is made on them.

The proxy's listeners are built on sockets it is handed (asyncssh ``listen(sock=...)``), so a
successor process can be handed the same ones and keep the ports (restarts without dropped
connections, a later issue). ``bind`` makes them as asyncio's ``create_server`` would, one per
address the host resolves to, except that port 0 picks one free port for all of them.
"""

import socket

BACKLOG = 100


def bind(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host``:``port`` ("" for every address);
    ``OSError`` (with its ``strerror``) if the address cannot be had."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the first one's free port, for all
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets

"""Where a user's SSH connection to this node comes from, as its proxy said (decision 0030).

The node has no listening port: every connection arrives from the proxy (a dial-back socket
or a channel inside the tunnel), so the socket's own peer is the proxy. The proxy says who
is behind it in the originator fields of the channel it opens to this node
(``tunnel_messages.SessionOrigin``): the id its audit events give the session and the
user's address. Channels are opened by the proxy holding this node's tunnel and nothing
else, so what they say is believed; a proxy of an older release says nothing, and the
session then has an id of its own and no address.

``origin(conn)`` is the one place the session code and the session environment
(``SSH_CONNECTION``, ``SSH_CLIENT``) read it; ``session_id(conn)`` names each session
channel: the first takes the proxy's id, every later one on the same connection
(OpenSSH's ControlMaster) a new id of its own, its events naming the proxy's as
``proxy_session_id``.
"""

import uuid
from dataclasses import dataclass
from typing import Protocol

from jumpgate.protocol.tunnel_messages import SessionOrigin

__all__ = ["Origin", "origin", "record", "session_ids"]

_KEY = "jumpgate_origin"
_USED = "jumpgate_origin_used"


class Connection(Protocol):
    """What is read of an SSH server connection (``asyncssh.SSHServerConnection``)."""

    def get_extra_info(self, name: str, default: object = None) -> object: ...
    def set_extra_info(self, **kwargs: object) -> None: ...


@dataclass(frozen=True)
class Origin:
    """A connection's user, as its proxy knows them."""

    client_addr: str  # the user's IP address; "" when the proxy did not say
    client_port: int  # the user's source port; 0 when the proxy did not say
    session_id: str  # the id of the proxy's events of this session; "" when not said


UNKNOWN = Origin("", 0, "")


def record(conn: Connection, told: SessionOrigin | None = None) -> None:
    """Keep ``conn``'s origin: ``told`` (a dial-back request's channel said it), else what
    the channel ``conn`` runs on says (a session inside the tunnel)."""
    if told is None:
        peer = conn.get_extra_info("remote_peername")
        if isinstance(peer, tuple) and len(peer) == 2:
            told = SessionOrigin.from_originator(peer[0], peer[1])
    found = UNKNOWN if told is None else Origin(told.addr, told.port, told.session_id)
    conn.set_extra_info(**{_KEY: found})


def origin(conn: Connection) -> Origin:
    """``conn``'s user address and port and the proxy's session id, as far as known."""
    found = conn.get_extra_info(_KEY)
    return found if isinstance(found, Origin) else UNKNOWN


def session_ids(conn: Connection) -> dict[str, str]:
    """The id fields of a new session channel on ``conn``: ``session_id`` (the proxy's for
    the first, a new one for each later), and ``proxy_session_id`` for a later one."""
    proxy_id = origin(conn).session_id
    first = not conn.get_extra_info(_USED)
    conn.set_extra_info(**{_USED: True})
    if proxy_id and first:
        return {"session_id": proxy_id}
    own = str(uuid.uuid4())
    return {"session_id": own, "proxy_session_id": proxy_id} if proxy_id else {"session_id": own}

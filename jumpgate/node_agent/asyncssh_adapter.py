"""Every use the node makes of asyncssh beyond its documented API, in one place.

The node serves a session as a documented callback ``asyncssh.SSHServerSession``
(``session_channel``) and carries the bytes itself (docs/decisions/0027). Two things sshd
does on a session channel have no public call in asyncssh, so this module, and only this
one, relies on these undocumented parts, each checked by ``tests/unit/test_asyncssh_adapter.py``
against the version pinned in ``CHECKED_VERSION``:

- ``SSHChannel._send_request(request, *args)``: sends a channel request now, without closing
  the channel. The public ``exit()`` sends exit-status and closes at once; sshd sends
  exit-status, then EOF, then CLOSE, and the EOF must follow the output still queued in the
  channel (a client that has its EOF and sent its own may close: a status sent after that is
  lost, as OpenSSH's ControlMaster showed).
- a channel request handler is the channel's method ``_process_<name>_request(packet)``
  (``asyncssh.misc.map_handler_name`` maps the name): ``eow@openssh.com``, which OpenSSH's
  client sends when it can write no more of the output (``ssh host yes | head -1``), gets one
  set on the channel instance.
- the same for ``env``: asyncssh keeps every variable a client sends (``_process_env_request``
  into the channel's ``_env``) without a bound; ``limit_environment`` wraps the channel's
  handler so that, as sshd's ``session_env_req``, requests past a limit are refused.
- ``SSHServerConnection.open_agent_connection()``: a stream to the user's agent over an
  ``auth-agent@openssh.com`` channel, once asyncssh granted the client's agent request
  (``agent_forwarding.AgentSocket`` relays the login's socket to it).
"""

from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.misc import map_handler_name
from asyncssh.packet import Boolean, String, UInt32

CHECKED_VERSION = "2.24.1"
"""The asyncssh release the private parts above were read in and tested against."""

END_OF_WRITING = "eow@openssh.com"
"""OpenSSH's channel request: the client's output failed, the server should send no more."""


def finish(
    channel: asyncssh.SSHServerChannel[bytes], status: int, signal: str | None = None
) -> None:
    """End a session channel as sshd does: exit-status (or exit-signal, by name without
    ``SIG``), then EOF after the output still queued, then CLOSE. Nothing if it is closing."""
    if channel.is_closing():
        return
    send: Any = channel._send_request  # see the module's docstring
    if signal is None:
        send(b"exit-status", UInt32(status & 0xFF))
    else:
        send(b"exit-signal", String(signal), Boolean(False), String(""), String(""))
    channel.write_eof()
    channel.close()


def on_end_of_writing(channel: asyncssh.SSHServerChannel[bytes], then: Callable[[], None]) -> None:
    """Call ``then`` when the client sends ``eow@openssh.com`` on ``channel``."""

    def handler(packet: Any) -> bool:
        packet.check_end()
        then()
        return True

    # A server left with its default ``line_editor=True`` hands sessions a wrapper whose
    # ``_orig_chan`` is the channel that receives the requests.
    target = getattr(channel, "_orig_chan", channel)
    setattr(target, f"_process_{map_handler_name(END_OF_WRITING)}_request", handler)


def limit_environment(channel: asyncssh.SSHServerChannel[bytes], limit: int) -> None:
    """Refuse the client's ``env`` requests on ``channel`` once it holds ``limit`` variables."""
    target = getattr(channel, "_orig_chan", channel)
    keep = target._process_env_request  # see the module's docstring

    def handler(packet: Any) -> bool:
        if len(target.get_environment_bytes()) < limit:
            return bool(keep(packet))
        packet.get_string()
        packet.get_string()
        packet.check_end()
        return False

    target._process_env_request = handler  # type: ignore[method-assign]


async def open_agent_connection(
    conn: asyncssh.SSHServerConnection,
) -> tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
    """A stream to the user's forwarded agent (``asyncssh.ChannelOpenError`` if the client
    asked for none, or its certificate did not permit it)."""
    opened: tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]
    opened = await conn.open_agent_connection()
    return opened

"""File transfers seen on the node, for the audit log: SFTP packets and legacy SCP streams.

The node relays both between the user's channel and the process serving them (the node's SFTP
server run as the login, the login's ``scp``); these watchers read the same bytes on the way
past and report each file: its path, what was done and how many bytes moved. They never change
or hold back the data. Names are reported whatever bytes they hold (undecodable ones escaped),
files still open when the session ends are reported with what moved so far, and a stream a
watcher cannot follow is reported (``unfollowed``) and stopped: it fails closed, as a protocol
error would, rather than let the rest of it through unwatched (issue 14, transfers).
"""

import logging
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Report = Callable[[str, dict[str, Any]], None]
"""Called with an outcome (``I``/``W``) and the event's fields."""
Stop = Callable[[], None]
"""Ends the transfer's channel: what a watcher does to a stream it cannot follow."""


def audit_name(value: bytes) -> str:
    """A name as the audit shows it: any bytes, undecodable ones escaped (``\\xff``)."""
    return value.decode(errors="backslashreplace")


def nothing() -> None:
    """The default ``stop``: a watcher on its own (a test) has no channel to end."""


class Watch(Protocol):
    """A watcher of one transfer stream (``sftp_watch.SftpWatch``, ``scp_watch.ScpWatch``)."""

    broken: bool

    @property
    def report(self) -> Report: ...

    @property
    def stop(self) -> Stop: ...


def unfollowed(watch: Watch, protocol: str, exc: Exception) -> None:
    """``watch`` cannot follow its stream: say so in the audit and end the transfer."""
    logger.warning("%s stream not followed: transfer stopped", protocol, extra={"reason": str(exc)})
    watch.broken = True
    watch.report("W", {"action": "unfollowed", "error": f"{protocol} stream not followed: {exc}"})
    watch.stop()

"""Why a user's session does not reach its node, as the proxy's parts say it.

Errors::

    Refused          the broker will not open this session; ``str()`` is the user's one line
    NodeUnreachable  the node link could not open the node's side (dial-back, tunnel, peer)

Neither names an SSH type: each front turns a ``Refused`` into what its protocol says (an
SSH channel-open failure, a line on the session's stderr, later a browser message).
"""

__all__ = ["NodeUnreachable", "Refused"]


class Refused(Exception):
    """A session refused; ``str()`` is what the user is told.

    ``unreachable`` says the node could not be found or reached (OpenSSH's "connect
    failed"), as opposed to a session that is not allowed ("administratively prohibited").
    """

    def __init__(self, message: str, *, unreachable: bool = False, audited: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.audited = audited  # its own event was recorded (a refused user's ``auth``)


class NodeUnreachable(Exception):
    """The node's side could not be opened; ``str()`` is what the user is told."""

"""Errors of the node agent.

::

    AgentError          stops the agent with a one-line message (retrying cannot help)
    ├── PinMismatch     the cluster's host CA is not the one the operator pinned
    └── JoinRefused     the platform refused the join token (expired, deleted, wrong role)
    ControlChannelError the tunnel's control channel ended or was refused: the tunnel is
                        opened again later (an agent and a proxy with no protocol in common)
"""


class AgentError(Exception):
    """The agent cannot go on; ``str()`` says why and what to do."""


class PinMismatch(AgentError):
    """The CA pin does not match the cluster's host CA."""


class JoinRefused(AgentError):
    """The join token was refused."""


class ControlChannelError(Exception):
    """The tunnel's control channel ended or was refused; ``str()`` says why in one line."""

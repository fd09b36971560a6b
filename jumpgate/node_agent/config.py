"""What ``jumpgate start --services=node`` tells the agent, checked when it is built.

The daemon's ``Config`` has already checked the text a person wrote; this model checks what
the agent is given however it is made (the daemon, the demo, a test), so a bad value stops
it before it joins, in one line naming the key (``protocol.settings.one_line``).
"""

import socket
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from jumpgate.node_agent.labels import DynamicLabel
from jumpgate.protocol.names import check_nodename, split_host_port
from jumpgate.protocol.settings import Flag, SettingsModel


def _auth_server(value: str | None) -> str | None:
    if value is not None:
        split_host_port(value, 0)
    return value


def _ca_pin(value: str | None) -> str | None:
    if value is not None and not value.startswith("sha256:"):
        raise ValueError(f"{value!r} is not sha256:<hex> (see jumpctl status)")
    return value


def _nodename(value: str) -> str:
    return check_nodename(value)


class AgentConfig(SettingsModel):
    """The node agent's settings."""

    data_dir: Path  # identity lives in <data_dir>/node
    # HOST:PORT of the tenant's web endpoint (first join)
    auth_server: Annotated[str | None, AfterValidator(_auth_server)] = None
    token: str | None = None  # join token (first join only)
    # a token was given to a node that has joined: someone means to join it again, so a
    # refused identity stops it (it would be refused forever) instead of retrying
    token_unused: Flag = False
    # sha256:... of the tenant's host CA (first join only)
    ca_pin: Annotated[str | None, AfterValidator(_ca_pin)] = None
    # this node's name; default: the host name (taken as the system has it)
    nodename: Annotated[str, AfterValidator(_nodename)] = Field(default_factory=socket.gethostname)
    labels: dict[str, str] = Field(default_factory=dict)  # static labels, env=prod
    dynamic_labels: tuple[DynamicLabel, ...] = ()  # labels a command prints, refreshed
    insecure: Flag = False  # accept a self-signed HTTPS certificate

"""What ``jumpgate start --services=node`` tells the agent, checked when it is built.

The daemon's ``Config`` has already checked the text a person wrote; this model checks what
the agent is given however it is made (the daemon, the demo, a test), so a bad value stops
it before it joins, in one line naming the key (``protocol.settings.one_line``).
"""

import socket
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from jumpgate.node_agent.labels import DynamicLabel
from jumpgate.node_agent.session_env import DEFAULT_ACCEPT_ENV, check_pattern
from jumpgate.protocol import ssh_algorithms
from jumpgate.protocol.names import check_nodename, split_host_port
from jumpgate.protocol.settings import Flag, SettingsModel
from jumpgate.protocol.ssh_algorithms import Ciphers, KexAlgos, MacAlgos


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


def _patterns(value: object) -> tuple[str, ...]:
    """``accept_env``: a list of patterns, or one text of them separated by spaces (as
    sshd's ``AcceptEnv LANG LC_*``)."""
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of variable name patterns (LANG, LC_*), not {value!r}")
    return tuple(check_pattern(pattern) for pattern in value)


def _service(value: str) -> str:
    if (
        not value
        or "/" in value
        or value.startswith(".")
        or not value.isprintable()
        or " " in value
    ):
        raise ValueError(f"{value[:40]!r} is not a PAM service name (a file in /etc/pam.d)")
    return value


class PamConfig(SettingsModel):
    """PAM's account and session stages around each session (sshd's ``UsePAM``, Teleport's
    ``ssh_service.pam``); the certificate is the authentication, PAM's is never asked."""

    enabled: Flag = False  # run PAM for each session
    # the service whose stack runs: /etc/pam.d/<service_name>
    service_name: Annotated[str, AfterValidator(_service)] = "sshd"


AcceptEnv = Annotated[tuple[str, ...], BeforeValidator(_patterns)]


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
    # the client's variables a session takes (SendEnv/SetEnv; sshd's AcceptEnv)
    accept_env: AcceptEnv = DEFAULT_ACCEPT_ENV
    pam: PamConfig = Field(default_factory=PamConfig)  # PAM around each session

    # SSH algorithms of the node's server and its tunnel (Teleport's keys); empty: defaults
    ciphers: Ciphers = ()
    kex_algos: KexAlgos = ()
    mac_algos: MacAlgos = ()

    def algorithms(self) -> ssh_algorithms.Algorithms:
        """What the node's SSH server and its tunnel offer (decision 0030)."""
        return ssh_algorithms.Algorithms.configured(self.kex_algos, self.ciphers, self.mac_algos)

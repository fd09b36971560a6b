"""The node service of the daemon: imports nothing of the platform, so a customer's server
needs only ``pip install jumpgate``."""

from typing import Any

from pydantic import ValidationError

from jumpgate.cli.daemon.config import Config, ConfigError, join_token
from jumpgate.node_agent import identity
from jumpgate.node_agent.agent import Agent
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.labels import parse
from jumpgate.protocol.settings import one_line


def agent_config(config: Config) -> AgentConfig:
    """The agent's settings from the daemon's config; ``ConfigError`` names a bad label or
    a value the agent refuses (``nodename``)."""
    try:
        static, dynamic = parse(config.labels)
    except ValueError as exc:
        raise ConfigError(f"labels: {exc}") from exc
    # A joined node needs no token: a --token file removed after the first start is no error
    joined = identity.load(config.data_dir) is not None
    fields: dict[str, Any] = {
        "data_dir": config.data_dir,
        "auth_server": config.auth_server or None,
        "token": None if joined else join_token(config.token) or None,
        "token_unused": joined and bool(config.token),
        "ca_pin": config.ca_pin or None,
        "labels": static,
        "dynamic_labels": tuple(dynamic),
        "insecure": config.insecure,
        "accept_env": config.accept_env,
        "pam": config.pam,
        "ciphers": config.ciphers,
        "kex_algos": config.kex_algos,
        "mac_algos": config.mac_algos,
    }
    if config.nodename:
        fields["nodename"] = config.nodename
    try:
        return AgentConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, AgentConfig)) from None


def make_agent(config: Config) -> Agent:
    return Agent(agent_config(config))

"""What every ``jumpctl`` command gets: an API client signed with the ``jump login`` profile."""

import argparse
from dataclasses import dataclass

from jumpgate.cli.common import profile
from jumpgate.cli.common.args import cluster_address
from jumpgate.protocol.client import Client, Credentials
from jumpgate.protocol.durations import parse_duration


@dataclass(frozen=True)
class Context:
    """The client and the address it reaches (for commands that print other commands)."""

    client: Client
    proxy: str
    insecure: bool


def from_args(args: argparse.Namespace) -> Context:
    """``--auth-server`` and ``--insecure`` override the profile's address and TLS choice."""
    given = cluster_address(args.auth_server, "--auth-server") if args.auth_server else ""
    current = profile.current()
    proxy = given or current.proxy
    insecure = args.insecure or current.insecure
    credentials = Credentials(current.certificate(), current.private_key())
    client = Client(proxy, insecure=insecure, credentials=credentials)
    return Context(client, client.host_header, insecure)


def durations(text: str) -> int:
    """A ``--ttl`` value in whole seconds, for argparse ``type=``."""
    try:
        seconds = int(parse_duration(text).total_seconds())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds < 60:
        raise argparse.ArgumentTypeError("must be at least 1m")
    return seconds

"""``version`` and ``--version``, the same in ``jump``, ``jumpctl`` and ``jumpgate``."""

import argparse
from typing import Any

from jumpgate.cli.common import output
from jumpgate.protocol.tunnel_messages import PROTOCOL_VERSIONS
from jumpgate.protocol.version import PROTOCOL_VERSION, server_version


def versions() -> dict[str, Any]:
    """The package's version, the API's protocol and the tunnel protocols this side speaks."""
    return {
        "version": server_version(),
        "protocol": PROTOCOL_VERSION,
        "tunnel_protocols": list(PROTOCOL_VERSIONS),
    }


def line(program: str) -> str:
    """``jump 0.1.0 (protocol 1, tunnel protocol 1)``."""
    info = versions()
    tunnel = ",".join(str(v) for v in info["tunnel_protocols"])
    return f"{program} {info['version']} (protocol {info['protocol']}, tunnel protocol {tunnel})"


def register(top: argparse.ArgumentParser, sub: Any, program: str) -> None:
    """``--version`` on the top parser and a ``version`` command (``--format json`` too)."""
    top.add_argument("--version", action="version", version=line(program))
    command = sub.add_parser("version", help="print the version")
    output.add_format(command)


def show(program: str, fmt: str) -> int:
    """Print the versions as ``version`` does."""
    if fmt == "json":
        output.emit_json(versions())
    else:
        print(line(program))
    return 0

"""``version`` and ``--version``, the same in ``jump``, ``jumpctl`` and ``jumpgate``."""

import argparse
from typing import Any

from jumpgate.cli.common import output
from jumpgate.protocol.version import PROTOCOL_VERSION, server_version


def versions() -> dict[str, Any]:
    """The package's version, the API's protocol and the tunnel protocols this side speaks."""
    # Imported here: the tunnel's message models cost ``jump ssh`` ~0.1 s at every start
    from jumpgate.protocol.tunnel_messages import PROTOCOL_VERSIONS

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


class _Version(argparse.Action):
    """``--version``: the line, worked out only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(line(parser.prog))  # on stdout, as argparse's own version action
        parser.exit(0)


def register(top: argparse.ArgumentParser, sub: Any) -> None:
    """``--version`` on the top parser and a ``version`` command (``--format json`` too)."""
    top.add_argument("--version", action=_Version, help="print the version and exit")
    command = sub.add_parser("version", help="print the version")
    output.add_format(command)


def show(program: str, fmt: str) -> int:
    """Print the versions as ``version`` does."""
    if fmt == "json":
        output.emit_json(versions())
    else:
        print(line(program))
    return 0

"""Versions a client and a server compare."""

from importlib import metadata

PROTOCOL_VERSION = "1"
"""Bumped when a request or response changes incompatibly."""


def server_version() -> str:
    """The installed package version (``0.0.0+local`` when run from a bare checkout)."""
    try:
        return metadata.version("jumpgate")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"

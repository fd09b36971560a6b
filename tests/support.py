"""Small helpers the network-facing test levels share."""

import gzip
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gzip_part(frame_bytes: bytes) -> bytes:
    """A recording part as a node sends one: a gzip member of frames."""
    return gzip.compress(frame_bytes, compresslevel=1, mtime=0)

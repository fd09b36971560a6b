"""``jump scp``: copy files to or from a node over SFTP, through the cluster's proxy.

One side is ``[LOGIN@]NODE:PATH``, the other local. The node serves SFTP itself, as the login,
so the copy has exactly that user's permissions; the session says it is ``jump scp`` (an env
request, ``TRANSFER_ENV``) so the node audits its files as ``scp``.
"""

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import asyncssh

from jumpgate.cli.common import profile
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jump.ssh import connect, node_name, split_target
from jumpgate.protocol.audit import TRANSFER_ENV


def register(sub: Any) -> None:
    scp = sub.add_parser("scp", help="copy files to or from a node")
    scp.add_argument("-r", dest="recursive", action="store_true", help="copy directories")
    scp.add_argument("-P", dest="port", type=int, default=22, help="node SSH port (22 or 3022)")
    scp.add_argument("-q", dest="quiet", action="store_true", help="no progress bar")
    scp.add_argument(
        "paths", nargs="+", metavar="SRC... DST", help="[LOGIN@]NODE:PATH or local path"
    )


@dataclass(frozen=True)
class Remote:
    """``[LOGIN@]NODE:PATH``."""

    target: str
    path: str


def _remote(text: str) -> Remote | None:
    head, sep, path = text.partition(":")
    if not sep or "/" in head or not head:
        return None
    return Remote(head, path or ".")


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None

    def show(source: bytes, _dest: bytes, done: int, total: int) -> None:
        name = source.decode(errors="replace").rsplit("/", 1)[-1][:30]
        share = done / total if total else 1.0
        bar = "#" * int(share * 30)
        sys.stderr.write(f"\r{name:<30} [{bar:<30}] {share:4.0%} {done / 1e6:8.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


async def _copy(current: profile.Profile, args: argparse.Namespace) -> None:
    *sources, destination = args.paths
    if not sources:
        raise CLIError("name a source and a destination: jump scp SRC... DST")
    remote_destination = _remote(destination)
    remote_sources = [_remote(s) for s in sources]
    if remote_destination is not None and any(remote_sources):
        raise CLIError("copy between two nodes is not supported: copy through this machine")
    if remote_destination is None and not all(remote_sources):
        raise CLIError("one side must be a node: [LOGIN@]NODE:PATH")
    targets = {r.target for r in remote_sources if r} | (
        {remote_destination.target} if remote_destination else set()
    )
    if len(targets) != 1:
        raise CLIError("copy from one node at a time")
    if remote_destination is not None:
        _check_local_sources(sources, args.recursive)
    login, host = split_target(targets.pop(), None, current)
    progress = _progress(sys.stderr.isatty() and not args.quiet)
    proxy, conn = await connect(current, login, node_name(host, current), args.port)
    upload = remote_destination is not None
    node = remote_destination or next(r for r in remote_sources if r)
    async with proxy, conn, conn.start_sftp_client(env=dict([TRANSFER_ENV])) as sftp:
        try:
            if remote_destination is not None:
                await sftp.put(
                    sources,
                    remote_destination.path,
                    recurse=args.recursive,
                    progress_handler=progress,
                )
            else:
                remotes = [r for r in remote_sources if r]
                for remote in remotes:
                    await _check_remote_source(sftp, remote, args.recursive)
                paths = [r.path for r in remotes]
                await sftp.get(
                    paths, destination, recurse=args.recursive, progress_handler=progress
                )
        except asyncssh.SFTPError as exc:
            # The node refused: name the node's file (asyncssh says which on the exception).
            path = getattr(exc, "dstpath" if upload else "srcpath", None) or node.path
            raise CLIError(f"copy failed: {exc.reason}: {node.target}:{_shown(path)}") from exc
        except OSError as exc:
            path = exc.filename or getattr(exc, "srcpath" if upload else "dstpath", None)
            raise CLIError(f"copy failed: {exc.strerror or exc}: {_shown(path)}") from exc


def _shown(path: str | bytes | None) -> str:
    """A path as a person reads it: asyncssh's are bytes, shown undecodable bytes escaped."""
    if isinstance(path, bytes):
        return path.decode(errors="backslashreplace")
    return path or "?"


def _check_local_sources(sources: list[str], recursive: bool) -> None:
    """Refuse before connecting what the copy would refuse: sftp names no path."""
    for source in sources:
        if not os.path.lexists(source):
            raise CLIError(f"copy failed: No such file or directory: {source}")
        if os.path.isdir(source) and not recursive:
            raise CLIError(f"copy failed: {source} is a directory: use -r")


async def _check_remote_source(sftp: Any, remote: Remote, recursive: bool) -> None:
    """The same for a node's file: asyncssh's errors carry the reason but not the path."""
    shown = f"{remote.target}:{remote.path}"
    try:
        attrs = await sftp.stat(remote.path)
    except asyncssh.SFTPNoSuchFile:
        raise CLIError(f"copy failed: No such file: {shown}") from None
    if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY and not recursive:
        raise CLIError(f"copy failed: {shown} is a directory: use -r")


def scp(args: argparse.Namespace) -> int:
    """Entry of ``jump scp``."""
    current = profile.current()
    try:
        asyncio.run(_copy(current, args))
    except asyncssh.SFTPError as exc:
        raise CLIError(f"copy failed: {exc.reason}") from exc
    except OSError as exc:
        name = _shown(exc.filename) if exc.filename else ""  # asyncssh's are bytes
        raise CLIError(f"copy failed: {exc.strerror or exc}: {name}".rstrip(": ")) from exc
    return 0

"""Agent forwarding on the node: the login's ``SSH_AUTH_SOCK``, as sshd makes it.

asyncssh answers the client's ``auth-agent-req@openssh.com`` itself, granting it only with
``permit-agent-forwarding`` in the certificate, and then listens on a socket of its own in a
directory only the agent's user (root) may enter: no use to a login. So the node makes, per
user connection, the socket sshd would: ``/tmp/ssh-XXXXXXXXXX/agent.<pid>`` in a 0700
directory, both owned by the login, mode 0600; each connection to it is relayed to the user's
agent over an ``auth-agent@openssh.com`` channel. It is removed when the user's connection
closes, without following anything the login may have put in its place.
"""

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Relay = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]
"""Serves one connection to the socket (a coroutine function, or a function that starts one)."""


class AgentSocket:
    """A Unix socket a login's commands reach the user's agent through."""

    def __init__(self, server: asyncio.Server, path: str, directory: os.stat_result) -> None:
        self._server = server
        self.path = path
        self._directory = directory  # its inode: what ``close`` may remove

    @classmethod
    async def open(cls, relay: Relay, *, uid: int, gid: int) -> "AgentSocket":
        """Listen in a new 0700 directory of ``/tmp``; chowned to ``uid``:``gid`` when the agent
        runs as root (otherwise they are the agent's user's already)."""
        directory = tempfile.mkdtemp(prefix="ssh-", dir="/tmp")  # 0700, ours
        path = os.path.join(directory, f"agent.{os.getpid()}")
        try:
            server = await asyncio.start_unix_server(relay, path)
            os.chmod(path, 0o600)
            if os.geteuid() == 0:
                os.chown(path, uid, gid)
                os.chown(directory, uid, gid)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.rmdir(directory)
            raise
        return cls(server, path, os.lstat(directory))

    def close(self) -> None:
        """Stop listening; remove the socket and its directory if they are still what was
        made (the login owns the directory and may have moved or replaced it)."""
        self._server.close()
        directory, name = os.path.split(self.path)
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return  # gone, or no longer a directory: nothing of ours to remove
        try:
            seen = os.fstat(fd)
            if (seen.st_dev, seen.st_ino) != (self._directory.st_dev, self._directory.st_ino):
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            os.rmdir(directory)  # not recursive: a file the login left there stays
        except OSError as exc:
            logger.info(
                "agent socket directory left", extra={"path": directory, "reason": str(exc)}
            )

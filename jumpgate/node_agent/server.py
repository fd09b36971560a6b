"""The node's SSH server, reached through the tunnel (no listening port).

A user certificate is accepted when the tenant's user CA signed it, it is within its
validity and the requested login is one of its principals (asyncssh checks the last two).
An agent that is not root serves only its own user, as a non-root sshd would.
"""

import inspect
import logging
import os
import pwd
import uuid

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent import sessions
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.outbox import Outbox
from jumpgate.protocol.ssh_identity import cert_identity

logger = logging.getLogger(__name__)


class NodeServer(asyncssh.SSHServer):
    """One user connection arriving through the tunnel."""

    def __init__(self, user_ca_keys: list[str], audit: Outbox[events.Event]) -> None:
        self._user_ca_keys = {key.split()[1] for key in user_ca_keys}
        self.audit = audit
        self._conn: asyncssh.SSHServerConnection | None = None
        # The effective user, not $USER: an agent started by sudo or setpriv keeps root's env.
        self._own_user = pwd.getpwuid(os.geteuid()).pw_name

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        if os.geteuid() != 0 and username != self._own_user and self._conn is not None:
            self._conn.send_auth_banner(
                f"login {username!r} is not served: this agent runs as {self._own_user!r}\n"
            )
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def session_requested(self) -> "asyncssh.SSHServerSession[bytes]":
        return _NodeSession(handle_process, None, 0, False)

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if os.geteuid() != 0 and username != self._own_user:
            return False
        try:
            sessions.Account.lookup(username)
        except KeyError:
            logger.info("login refused: no such OS user", extra={"login": username})
            return False
        return key.export_public_key("openssh").split()[1].decode() in self._user_ca_keys


class _NodeSession(asyncssh.SSHServerProcess[bytes]):
    """A session whose ``sftp`` subsystem is a process like any other.

    asyncssh would serve SFTP in-process, with the agent's privileges (root); this runs
    OpenSSH's ``sftp-server`` as the login instead (see ``sessions``).
    """

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # ``sessions.run`` refuses unknown subsystems with a message

    def session_started(self) -> None:
        channel = self._chan
        if channel is None or channel.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = asyncssh.SSHReader[bytes](self, channel)
        stdout = asyncssh.SSHWriter[bytes](self, channel)
        stderr = asyncssh.SSHWriter[bytes](self, channel, asyncssh.EXTENDED_DATA_STDERR)
        handler = self._session_factory(stdin, stdout, stderr)  # type: ignore[misc]
        if inspect.isawaitable(handler) and self._conn is not None:
            self._conn.create_task(handler, stdin.logger)


async def handle_process(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the session as the login the certificate allowed, and audit it."""
    login = process.get_extra_info("username")
    conn = process.channel.get_connection()
    assert isinstance(conn, asyncssh.SSHServerConnection)
    owner = conn.get_owner()
    identity = cert_identity(conn)
    # No remote address: the node sees the proxy's; the proxy's own events have the user's.
    who = {
        "user": identity.user if identity else "",
        "login": login,
        "session_id": str(uuid.uuid4()),
    }
    audit = owner.audit if isinstance(owner, NodeServer) else None
    shell = process.command is None and not process.subsystem
    if audit is not None and shell:
        audit.put(events.event(EventType.SESSION_START, **who, terminal=bool(process.term_type)))
    try:
        status = await sessions.run(process, sessions.Account.lookup(login))
    except (OSError, asyncssh.Error) as exc:
        logger.warning("session failed", extra={"login": login, "reason": str(exc)})
        process.stderr.write(f"session failed on the node: {exc}\n".encode())
        status = 1
    if audit is not None and shell:
        audit.put(events.event(EventType.SESSION_END, **who, exit_code=status))
    elif audit is not None and process.command is not None:
        outcome = "I" if status == 0 else "E"
        audit.put(
            events.event(
                EventType.EXEC,
                outcome=outcome,
                **who,
                command=process.command[:1024],
                exit_code=status,
            )
        )
    process.exit(status)

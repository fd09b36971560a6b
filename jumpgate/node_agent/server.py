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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent import sessions
from jumpgate.node_agent.recording import Recorder
from jumpgate.node_agent.transfers import ScpWatch, SftpWatch
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.outbox import Outbox
from jumpgate.protocol.recording import RecordingMeta, RecordingMode
from jumpgate.protocol.ssh_identity import cert_identity

logger = logging.getLogger(__name__)


class NodeServer(asyncssh.SSHServer):
    """One user connection arriving through the tunnel."""

    def __init__(
        self, user_ca_keys: list[str], audit: Outbox[events.Event], uploads: Uploader
    ) -> None:
        self._user_ca_keys = {key.split()[1] for key in user_ca_keys}
        self.audit = audit
        self.uploads = uploads
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
    """A session as the node serves it: recorded, watched for file transfers, and with its
    ``sftp`` subsystem run as a process like any other.

    asyncssh would serve SFTP in-process, with the agent's privileges (root); this runs
    OpenSSH's ``sftp-server`` as the login instead (see ``sessions``). Output is written to
    the recording before it is sent, so whatever the user saw is on disk.
    """

    recorder: Recorder | None = None
    sync = False  # node-sync: a recording that fails ends the session
    watch: SftpWatch | ScpWatch | None = None
    on_resize: Callable[[int, int], None] | None = None  # audits a window change

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # ``sessions.run`` refuses unknown subsystems with a message

    def feed_data(self, data: bytes, datatype: asyncssh.DataType) -> None:
        recorder = self.recorder
        if recorder is not None and not recorder.output(data) and self.sync:
            self._recording_failed()
            return
        if self.watch is not None:
            self.watch.from_node(data)
        super().feed_data(data, datatype)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.watch is not None:
            self.watch.from_user(data)
        super().data_received(data, datatype)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        super().terminal_size_changed(width, height, pixwidth, pixheight)
        if self.on_resize is not None:
            self.on_resize(width, height)
        recorder = self.recorder
        if recorder is not None and not recorder.resize(width, height) and self.sync:
            self._recording_failed()

    def _recording_failed(self) -> None:
        self.recorder = None
        if self._chan is not None:
            message = b"\r\njumpgate: the session ended: it could not be recorded (node-sync)\r\n"
            self._chan.write(message, asyncssh.EXTENDED_DATA_STDERR)
            self._chan.exit(255)

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


def _recorder(
    process: _NodeSession, uploads: Uploader, account: sessions.Account, who: dict[str, str]
) -> Recorder | None:
    """Start recording a shell or exec session, if the tenant records it."""
    shell = process.command is None
    if uploads.mode is RecordingMode.OFF or not (shell or uploads.record_exec):
        return None
    width, height, _, _ = process.term_size
    meta = RecordingMeta(
        session_id=who["session_id"],
        kind="shell" if shell else "exec",
        user=who["user"],
        login=who["login"],
        command=process.command,
        started=datetime.now(UTC),
        width=width or 80,
        height=height or 24,
        term=process.term_type or "",
        shell=account.shell,
    )
    try:
        recorder = Recorder(uploads.spool.create(meta), on_part=uploads.wake)
    except OSError as exc:
        logger.warning("recording could not start", extra={"reason": str(exc)})
        if uploads.mode is RecordingMode.NODE_SYNC:
            raise
        return None
    uploads.recorders[meta.session_id] = recorder  # the uploader drops it once drained
    return recorder


async def handle_process(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the session as the login the certificate allowed; record and audit it."""
    assert isinstance(process, _NodeSession)
    login = process.get_extra_info("username")
    conn = process.channel.get_connection()
    assert isinstance(conn, asyncssh.SSHServerConnection)
    owner = conn.get_owner()
    assert isinstance(owner, NodeServer)
    identity = cert_identity(conn)
    # No remote address: the node sees the proxy's; the proxy's own events have the user's.
    who = {
        "user": identity.user if identity else "",
        "login": login,
        "session_id": str(uuid.uuid4()),
    }
    audit = owner.audit

    def transfer(kind: EventType) -> Any:
        return lambda outcome, fields: audit.put(
            events.event(kind, outcome=outcome, **who, **fields)
        )

    status = 1
    recorder = None
    try:
        account = sessions.Account.lookup(login)
        if process.subsystem == "sftp":
            process.watch = SftpWatch(transfer(EventType.SFTP))
        elif process.command is not None:
            process.watch = ScpWatch.for_command(
                process.command, transfer(EventType.SCP), account.home
            )
        process.on_resize = lambda width, height: audit.put(
            events.event(EventType.SESSION_RESIZE, **who, size=f"{width}:{height}")
        )
        if process.watch is None and not process.subsystem:
            recorder = process.recorder = _recorder(process, owner.uploads, account, who)
            process.sync = owner.uploads.mode is RecordingMode.NODE_SYNC
        audit.put(
            events.event(
                EventType.SESSION_START,
                **who,
                terminal=bool(process.term_type),
                recorded=recorder is not None,
            )
        )
        status = await sessions.run(process, account)
    except (OSError, KeyError, asyncssh.Error) as exc:
        logger.warning("session failed", extra={"login": login, "reason": str(exc)})
        process.stderr.write(f"session failed on the node: {exc}\n".encode())
    finally:
        process.recorder = None
        process.on_resize = None
        if recorder is not None:
            recorder.close(status)
    audit.put(events.event(EventType.SESSION_END, **who, exit_code=status))
    if process.command is not None:
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

"""The node's SSH server, reached through the tunnel (no listening port).

A user certificate is accepted when the tenant's user CA signed it, it is within its
validity and the requested login is one of its principals (asyncssh checks the last two).
An agent that is not root serves only its own user, as a non-root sshd would.

A session's node events (``session.start``, ``exec``, ``session.end``) are written however
it ends: its command exits, the user's client is killed, the channel fails, or the agent
stops (``LiveSessions.end_all``). They go to the agent's audit spool, on disk.
"""

import asyncio
import contextlib
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
from jumpgate.node_agent.audit_budget import Budgets, SessionAudit
from jumpgate.node_agent.recording import Recorder
from jumpgate.node_agent.transfers import ScpWatch, SftpWatch, scp_server_argv
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from jumpgate.protocol.audit import EventType
from jumpgate.protocol.recording import RecordingMeta, RecordingMode
from jumpgate.protocol.ssh_identity import cert_identity

logger = logging.getLogger(__name__)
CLOSE_SECONDS = 10.0
"""How long a finished session waits for its channel to close before it stops caring."""

NO_LOGIN_SHELLS = frozenset({"nologin", "false"})
"""A login with one of these shells gets no session of any kind, transfers included (sshd
runs even scp through the login's shell, which refuses)."""
AGENT_STOPPED = "the agent stopped"
MAX_SESSIONS = 10
"""Session channels one user connection may hold open at once (OpenSSH's ``MaxSessions``)."""


class LiveSessions:
    """The sessions this agent is serving, so that stopping the agent ends each of them
    the way a lost client does, with its events written."""

    def __init__(self) -> None:
        self._sessions: dict[_NodeSession, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, process: "_NodeSession") -> asyncio.Event:
        done = self._sessions[process] = asyncio.Event()
        return done

    def discard(self, process: "_NodeSession") -> None:
        done = self._sessions.pop(process, None)
        if done is not None:
            done.set()

    async def end_all(self, reason: str = AGENT_STOPPED, *, seconds: float = 5.0) -> None:
        """Hang up on every live session (its command gets SIGHUP, as from sshd) and wait up
        to ``seconds`` for their handlers to write their events."""
        waiting = list(self._sessions.items())
        for process, _ in waiting:
            process.ended_by = reason
            _say(process, f"jumpgate: the session ended: {reason} on the node\r\n")
            with contextlib.suppress(Exception):
                process.channel.close()
        if waiting:
            logger.info("ending live sessions", extra={"sessions": len(waiting), "reason": reason})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(done.wait() for _, done in waiting)), seconds
                )


def _say(process: asyncssh.SSHServerProcess[bytes], message: str) -> None:
    """A line on the user's stderr, if the channel can still take one."""
    with contextlib.suppress(Exception):
        process.stderr.write(message.encode())


class NodeServer(asyncssh.SSHServer):
    """One user connection arriving through the tunnel.

    It may hold ``max_sessions`` session channels open at once (OpenSSH's ``MaxSessions``,
    10): each one is a process, and a descriptor or more, on this node. The proxy cannot
    count them: it carries the user's SSH connection end to end, bytes it cannot read.
    Nothing else is served on it (no forwarding: asyncssh refuses those by default).
    """

    def __init__(
        self,
        user_ca_keys: list[str],
        audit: events.EventSink,
        uploads: Uploader,
        live: LiveSessions | None = None,
        max_sessions: int = MAX_SESSIONS,
        budgets: Budgets | None = None,
    ) -> None:
        self._user_ca_keys = list(user_ca_keys)  # any of them (decision 0022)
        self.audit = audit
        self.budgets = budgets if budgets is not None else Budgets()  # the agent's, shared
        self.uploads = uploads
        self.live = live if live is not None else LiveSessions()
        self._conn: asyncssh.SSHServerConnection | None = None
        self._max_sessions = max_sessions
        self._sessions = 0  # session channels open on this connection
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
        if self._sessions >= self._max_sessions:
            logger.info(
                "session refused: too many on one connection", extra={"limit": self._max_sessions}
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"too many sessions on this connection (at most {self._max_sessions} open at"
                " once): close one, or open another connection",
            )
        self._sessions += 1
        session = _NodeSession(handle_process, None, 0, False)
        lost = session.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            self._sessions -= 1
            lost(exc)

        session.connection_lost = connection_lost  # type: ignore[method-assign]
        return session

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if os.geteuid() != 0 and username != self._own_user:
            return False
        try:
            sessions.Account.lookup(username)
        except KeyError:
            logger.info("login refused: no such OS user", extra={"login": username})
            return False
        return certs.is_trusted(key.export_public_key("openssh").decode(), self._user_ca_keys)


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
    who: dict[str, str] | None = None  # user, login, session id: set as the session starts
    account: sessions.Account | None = None  # the login's account, looked up as it starts
    audit: SessionAudit | None = None  # its events' sink, held to its audit budget
    transfer_argv: list[str] | None = None  # a legacy scp transfer's argv, run with no shell
    on_resize: Callable[[int, int], None] | None = None  # audits a window change
    ended_by: str | None = None  # why the agent ended the session, if it did
    over_budget = False  # it went over its audit budget: nothing more it sends is run

    def subsystem_requested(self, subsystem: str) -> bool:
        return True  # ``sessions.run`` refuses unknown subsystems with a message

    def feed_data(self, data: bytes, datatype: asyncssh.DataType) -> None:
        recorder = self.recorder
        if recorder is not None and not recorder.output(data) and self.sync:
            self._recording_failed()
            return
        if self.watch is not None and datatype is None:  # the transfer is stdout, not stderr
            self.watch.from_node(data)
            if self.watch.broken:
                return  # a download the audit cannot follow goes no further (it is closing)
        super().feed_data(data, datatype)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.over_budget:
            return  # fail closed: what it asks for now would not be audited
        if self.watch is not None and datatype is None:
            self.watch.from_user(data)
            if self.watch.broken:
                return  # a transfer the audit cannot follow goes no further (it is closing)
        if self.over_budget:
            return  # it went over while this was read: this goes no further either
        super().data_received(data, datatype)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        super().terminal_size_changed(width, height, pixwidth, pixheight)
        if self.on_resize is not None:
            self.on_resize(width, height)
        recorder = self.recorder
        if recorder is not None and not recorder.resize(width, height) and self.sync:
            self._recording_failed()

    def end_over_budget(self, reason: str) -> None:
        """End a session whose audit events outran its budget (``audit_budget``)."""
        self.over_budget = True
        self.ended_by = reason
        _say(self, f"\r\njumpgate: the session ended: {reason}\r\n")
        with contextlib.suppress(Exception):
            self.close()

    def _recording_failed(self) -> None:
        self.recorder = None
        if self._chan is not None:
            message = b"\r\njumpgate: the session ended: it could not be recorded (node-sync)\r\n"
            with contextlib.suppress(Exception):  # the channel may be closing already
                self._chan.write(message, asyncssh.EXTENDED_DATA_STDERR)
                self._chan.exit(255)

    def session_started(self) -> None:
        # asyncssh calls this once it has accepted the exec or subsystem request, and only
        # then delivers the channel's data: the watcher is in place before the first byte.
        _decide(self)
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


def _opened_size(process: asyncssh.SSHServerProcess[bytes]) -> tuple[int, int]:
    """The size a session's terminal starts at, as its recording says it (80x24 when the
    client gave none)."""
    width, height, _, _ = process.term_size
    return width or 80, height or 24


def _recorder(
    process: _NodeSession, uploads: Uploader, account: sessions.Account, who: dict[str, str]
) -> Recorder | None:
    """Start recording a shell or exec session, if the tenant records it; ``OSError`` if it
    does and the recording cannot start (the session must not start then)."""
    shell = process.command is None
    if uploads.mode is RecordingMode.OFF or not (shell or uploads.record_exec):
        return None
    width, height = _opened_size(process)
    meta = RecordingMeta(
        session_id=who["session_id"],
        kind="shell" if shell else "exec",
        user=who["user"],
        login=who["login"],
        command=process.command,
        started=datetime.now(UTC),
        width=width,
        height=height,
        term=process.term_type or "",
        shell=account.shell,
    )
    recorder = Recorder(uploads.spool.create(meta), on_part=uploads.wake)
    uploads.recorders[meta.session_id] = recorder  # the uploader drops it once drained
    return recorder


def _transfer_argv(process: _NodeSession, account: sessions.Account) -> list[str] | None:
    """The argv of a legacy scp transfer, run without a shell; None for anything else.
    Never on a PTY: real scp asks for none, and a terminal is a session."""
    if process.term_type or os.path.basename(account.shell) in NO_LOGIN_SHELLS:
        return None
    return scp_server_argv(process.command)


def _owner(process: asyncssh.SSHServerProcess[bytes]) -> NodeServer:
    owner = process.channel.get_connection().get_owner()
    assert isinstance(owner, NodeServer)
    return owner


def _decide(process: _NodeSession) -> None:
    """Name the session and, if it is a file transfer, attach its watcher: called as the
    session starts, before the channel delivers any data, so no byte of a transfer passes
    unwatched (issue 14 round 2: bytes sent along with the request went by before
    ``handle_process`` set the watcher, and 2 uploads in 5 were not audited)."""
    conn = process.channel.get_connection()
    assert isinstance(conn, asyncssh.SSHServerConnection)
    identity = cert_identity(conn)
    login = process.get_extra_info("username")
    # No remote address: the node sees the proxy's; the proxy's own events have the user's.
    who = process.who = {
        "user": identity.user if identity else "",
        "login": login,
        "session_id": str(uuid.uuid4()),
    }
    # Its transfer events are held to a budget; over it, the session is ended (fail closed).
    owner = _owner(process)
    audit = process.audit = owner.budgets.session(owner.audit, who, process.end_over_budget)
    try:
        account = process.account = sessions.Account.lookup(login)
    except KeyError:
        return  # no session: ``handle_process`` refuses it

    def transfer(kind: EventType) -> Any:
        return lambda outcome, fields: audit.put(
            events.event(kind, outcome=outcome, **who, **fields)
        )

    if process.subsystem == "sftp":
        process.watch = SftpWatch(transfer(EventType.SFTP), stop=process.close)
    elif process.command is not None:
        argv = process.transfer_argv = _transfer_argv(process, account)
        if argv is not None:
            process.watch = ScpWatch.for_argv(
                argv, transfer(EventType.SCP), account.home, process.close
            )


async def handle_process(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the session as the login the certificate allowed; record and audit it."""
    assert isinstance(process, _NodeSession)
    login = process.get_extra_info("username")
    owner = _owner(process)
    assert process.who is not None  # ``session_started`` decided, before this task ran
    assert process.audit is not None
    who = process.who
    audit = process.audit
    status = 1
    recorder = None
    resizes: events.Resizes | None = None
    owner.live.add(process)
    try:
        account = process.account
        if account is None:
            raise KeyError(f"no such login on the node: {login}")
        argv = process.transfer_argv
        process.on_resize = resizes = events.Resizes(
            lambda width, height: audit.put(
                events.event(EventType.SESSION_RESIZE, **who, size=f"{width}:{height}")
            ),
            size=_opened_size(process) if process.term_type else None,
        )
        if process.watch is None and not process.subsystem:
            try:
                recorder = process.recorder = _recorder(process, owner.uploads, account, who)
            except OSError as exc:
                status = 255
                _refuse_unrecorded(process, audit, who, exc)
                return
            process.sync = owner.uploads.mode is RecordingMode.NODE_SYNC
        audit.put(
            events.event(
                EventType.SESSION_START,
                **who,
                terminal=bool(process.term_type),
                recorded=recorder is not None,
            )
        )
        status = await sessions.run(process, account, argv)
    except (OSError, KeyError, asyncssh.Error) as exc:
        logger.warning("session failed", extra={"login": login, "reason": str(exc)})
        _say(process, f"session failed on the node: {exc}\n")
    finally:
        # Whatever ended the session (its command, a lost client, a failed channel, the
        # agent stopping, a cancelled task), its events are written before anything else
        # can fail: the channel may be gone, and writing to it must not skip them.
        process.recorder = None
        process.on_resize = None
        try:
            if process.watch is not None:
                process.watch.finish()  # files left open are reported before the end
            if resizes is not None:
                resizes.close()  # the last size, if one is still waiting
            if recorder is not None:
                recorder.close(status)
        finally:
            _audit_end(process, audit, who, status)
            owner.live.discard(process)
            with contextlib.suppress(Exception):
                process.exit(status)
    # asyncssh closes the redirected pipes with clean-up steps that only wait_closed() runs;
    # left unawaited, each is a "coroutine was never awaited" warning in the agent's log.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.wait_closed(), CLOSE_SECONDS)


def _refuse_unrecorded(
    process: _NodeSession, audit: events.EventSink, who: dict[str, str], exc: OSError
) -> None:
    """The tenant records sessions and this one cannot be: it does not start."""
    logger.warning(
        "session refused: recording could not start",
        extra={"session_id": who["session_id"], "reason": str(exc)},
    )
    audit.put(
        events.event(
            EventType.SESSION_START,
            outcome="E",
            **who,
            terminal=bool(process.term_type),
            recorded=False,
            error=f"refused: the session could not be recorded ({exc})"[:500],
        )
    )
    _say(
        process,
        "jumpgate: session refused: it could not be recorded on the node "
        "(the agent's data dir may be full or read-only); ask the node's admin\r\n",
    )


def _audit_end(
    process: _NodeSession, audit: events.EventSink, who: dict[str, str], status: int
) -> None:
    ended: dict[str, Any] = {"reason": process.ended_by} if process.ended_by else {}
    audit.put(events.event(EventType.SESSION_END, **who, exit_code=status, **ended))
    if process.command is not None:
        outcome = "I" if status == 0 else "E"
        audit.put(
            events.event(
                EventType.EXEC,
                outcome=outcome,
                **who,
                command=process.command,  # bounded by ``events.event``, which says if cut
                exit_code=status,
            )
        )

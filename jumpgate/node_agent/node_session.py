"""One session channel as the node serves it: named, recorded, watched for file transfers,
held to its audit budget, and its events written however it ends.

Its node events (``session.start``, ``exec``, ``session.end``) are written whether its
command exits, the user's client is killed, the channel fails, or the agent stops
(``server.LiveSessions.end_all``). They go to the agent's audit spool, on disk.

The channel is a ``session_channel.SessionChannel``, which tells the ``NodeSession`` what
passes: output is written to the recording before it is sent, so whatever the user saw is on
disk; ``sftp`` runs the agent's own SFTP server as the login, like any other command.
"""

import asyncio
import dataclasses
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent import origin, sessions
from jumpgate.node_agent.audit_budget import Budgets, SessionAudit
from jumpgate.node_agent.pam_session import PamError
from jumpgate.node_agent.recording import Recorder
from jumpgate.node_agent.scp_watch import ScpWatch, scp_server_argv
from jumpgate.node_agent.session_channel import SessionChannel, Spawn
from jumpgate.node_agent.session_setup import SessionSetup, SetupPolicy, open_setup
from jumpgate.node_agent.sftp_watch import SftpWatch
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol.audit import TRANSFER_ENV, EventType
from jumpgate.protocol.recording import RecordingMeta, RecordingMode
from jumpgate.protocol.ssh_identity import cert_identity

logger = logging.getLogger(__name__)

NO_LOGIN_SHELLS = frozenset({"nologin", "false"})
"""A login with one of these shells gets no session of any kind, transfers included (sshd
runs even scp through the login's shell, which refuses)."""


class Live(Protocol):
    """The agent's register of live sessions (``server.LiveSessions``)."""

    def add(self, session: "NodeSession") -> asyncio.Event: ...

    def discard(self, session: "NodeSession") -> None: ...


class Host(Protocol):
    """What a session takes from the connection's server (``server.NodeServer``)."""

    @property
    def audit(self) -> events.EventSink: ...

    @property
    def budgets(self) -> Budgets: ...

    @property
    def uploads(self) -> Uploader: ...

    @property
    def live(self) -> Live: ...

    @property
    def setup(self) -> SetupPolicy: ...

    async def agent_socket(
        self, channel: asyncssh.SSHServerChannel[bytes], account: sessions.Account
    ) -> str | None: ...

    def heard(self) -> None:
        """The user sent something (a role's ``client_idle_timeout`` counts from it)."""

    async def admitted(self) -> str | None:
        """None once the connection is admitted by the node's policy, else why not."""


class NodeSession:
    """A session channel's state, and the ``session_channel.Observer`` of its bytes."""

    def __init__(self, host: Host, spawn: Spawn, *, on_closed: Callable[[], None]) -> None:
        self.host = host
        self.channel = SessionChannel(_serve, self, spawn)
        self._on_closed = on_closed
        self.recorder: Recorder | None = None
        self.sync = False  # node-sync: a recording that fails ends the session
        self.watch: SftpWatch | ScpWatch | None = None
        self.who: dict[str, str] | None = None  # user, login, session id: set as it starts
        self.account: sessions.Account | None = None  # the login's account, looked up then
        self.audit: SessionAudit | None = None  # its events' sink, held to its audit budget
        self.transfer_argv: list[str] | None = None  # a legacy scp transfer, run with no shell
        self.on_resize: Callable[[int, int], None] | None = None  # audits a window change
        self.ended_by: str | None = None  # why the agent ended the session, if it did
        self.over_budget = False  # it went over its audit budget: nothing more it sends runs

    # -- what the channel tells it (``session_channel.Observer``) -----------------------------

    def started(self) -> None:
        _decide(self)

    def output(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        recorder = self.recorder
        if recorder is not None and not recorder.output(data) and self.sync:
            self._recording_failed()
            return False
        if self.watch is not None and datatype is None:  # the transfer is stdout, not stderr
            self.watch.from_node(data)
            if self.watch.broken:
                return False  # a download the audit cannot follow goes no further (closing)
        return True

    def input(self, data: bytes, datatype: asyncssh.DataType) -> bool:
        self.host.heard()
        if self.over_budget:
            return False  # fail closed: what it asks for now would not be audited
        if self.watch is not None and datatype is None:
            self.watch.from_user(data)
            if self.watch.broken:
                return False  # a transfer the audit cannot follow goes no further (closing)
        # It may have gone over while this was read: then this goes no further either.
        return not self.over_budget

    def resized(self, width: int, height: int) -> None:
        if self.on_resize is not None:
            self.on_resize(width, height)
        recorder = self.recorder
        if recorder is not None and not recorder.resize(width, height) and self.sync:
            self._recording_failed()

    def closed(self) -> None:
        self._on_closed()

    # -- ending it -----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A line on the user's stderr, if the channel can still take one."""
        self.channel.say(message.encode())

    def end_over_budget(self, reason: str) -> None:
        """End a session whose audit events outran its budget (``audit_budget``)."""
        self.over_budget = True
        self.ended_by = reason
        self.say(f"\r\njumpgate: the session ended: {reason}\r\n")
        self.channel.close()

    def _recording_failed(self) -> None:
        self.recorder = None
        message = b"\r\njumpgate: the session ended: it could not be recorded (node-sync)\r\n"
        self.channel.say(message)
        self.channel.finish(255)


def _opened_size(channel: SessionChannel) -> tuple[int, int]:
    """The size a session's terminal starts at, as its recording says it (80x24 when the
    client gave none)."""
    width, height, _, _ = channel.term_size
    return width or 80, height or 24


def _recorder(
    channel: SessionChannel, uploads: Uploader, account: sessions.Account, who: dict[str, str]
) -> Recorder | None:
    """Start recording a shell or exec session, if the tenant records it; ``OSError`` if it
    does and the recording cannot start (the session must not start then)."""
    shell = channel.command is None
    if uploads.mode is RecordingMode.OFF or not (shell or uploads.record_exec):
        return None
    width, height = _opened_size(channel)
    meta = RecordingMeta(
        session_id=who["session_id"],
        kind="shell" if shell else "exec",
        user=who["user"],
        login=who["login"],
        command=channel.command,
        started=datetime.now(UTC),
        width=width,
        height=height,
        term=channel.term_type or "",
        shell=account.shell,
    )
    recorder = Recorder(uploads.spool.create(meta), on_part=uploads.wake)
    uploads.recorders[meta.session_id] = recorder  # the uploader drops it once drained
    return recorder


def _transfer_argv(channel: SessionChannel, account: sessions.Account) -> list[str] | None:
    """The argv of a legacy scp transfer, run without a shell; None for anything else.
    Never on a PTY: real scp asks for none, and a terminal is a session."""
    if channel.term_type or os.path.basename(account.shell) in NO_LOGIN_SHELLS:
        return None
    return scp_server_argv(channel.command)


def _decide(session: NodeSession) -> None:
    """Name the session and, if it is a file transfer, attach its watcher: called as the
    session starts, before the channel delivers any data, so no byte of a transfer passes
    unwatched (issue 14 round 2: bytes sent along with the request went by before the
    handler set the watcher, and 2 uploads in 5 were not audited)."""
    channel = session.channel
    conn = channel.channel.get_connection()
    assert isinstance(conn, asyncssh.SSHServerConnection)
    identity = cert_identity(conn)
    login = channel.get_extra_info("username")
    # The proxy's session id and the user's address, as the proxy said them (decision 0030)
    came = origin.origin(conn)
    who = session.who = {
        "user": identity.user if identity else "",
        "login": login,
        **origin.session_ids(conn),
        **({"remote_addr": f"{came.client_addr}:{came.client_port}"} if came.client_addr else {}),
    }
    # Its transfer events are held to a budget; over it, the session is ended (fail closed).
    host = session.host
    audit = session.audit = host.budgets.session(host.audit, who, session.end_over_budget)
    try:
        account = session.account = sessions.Account.lookup(login)
    except KeyError:
        return  # no session: ``_serve`` refuses it

    def transfer(kind: EventType) -> Any:
        return lambda outcome, fields: audit.put(
            events.event(kind, outcome=outcome, **who, **fields)
        )

    if channel.subsystem == "sftp":
        session.watch = SftpWatch(transfer(_sftp_kind(channel)), stop=channel.close)
    elif channel.command is not None:
        argv = session.transfer_argv = _transfer_argv(channel, account)
        if argv is not None:
            session.watch = ScpWatch.for_argv(
                argv, transfer(EventType.SCP), account.home, channel.close
            )


def _sftp_kind(channel: SessionChannel) -> EventType:
    """``scp`` for ``jump scp``, which says so in an env request; ``sftp`` for the rest."""
    name, value = TRANSFER_ENV
    return EventType.SCP if channel.channel.get_environment().get(name) == value else EventType.SFTP


async def _serve(channel: SessionChannel) -> None:
    """Run the session as the login the certificate allowed; record and audit it."""
    session = channel.observer
    assert isinstance(session, NodeSession)
    login = channel.get_extra_info("username")
    host = session.host
    assert session.who is not None  # ``started`` decided, before this task ran
    assert session.audit is not None
    who = session.who
    audit = session.audit
    status = 1  # the exit code the audit and the recording get (128+N for signal N)
    returncode = 1  # how the command ended, as the client is told (negative: a signal)
    recorder = None
    resizes: events.Resizes | None = None
    setup: SessionSetup | None = None
    refused = await host.admitted()  # a first session may come while the roles are read
    if refused is not None:
        session.say(f"jumpgate: {refused}\n")
        channel.finish(255)
        return
    host.live.add(session)
    try:
        account = session.account
        if account is None:
            raise KeyError(f"no such login on the node: {login}")
        agent = await host.agent_socket(channel.channel, account)  # ``ssh -A``, if permitted
        if agent is not None:
            account = dataclasses.replace(account, extra_env=(("SSH_AUTH_SOCK", agent),))
        setup = await open_setup(host.setup, channel, account)  # its environment, PAM
        argv = session.transfer_argv
        session.on_resize = resizes = events.Resizes(
            lambda width, height: audit.put(
                events.event(EventType.SESSION_RESIZE, **who, size=f"{width}:{height}")
            ),
            size=_opened_size(channel) if channel.term_type else None,
        )

        def opened() -> None:  # once PAM's stages passed: before the command runs
            nonlocal recorder
            if session.watch is None and not channel.subsystem:
                try:
                    recorder = session.recorder = _recorder(channel, host.uploads, account, who)
                except OSError as exc:
                    _refuse_unrecorded(session, audit, who, exc)
                    raise sessions.NotStarted(255) from exc
                session.sync = host.uploads.mode is RecordingMode.NODE_SYNC
            audit.put(
                events.event(
                    EventType.SESSION_START,
                    **who,
                    terminal=bool(channel.term_type),
                    recorded=recorder is not None,
                )
            )

        setup.on_opened = opened
        try:
            returncode = await sessions.run(channel, account, argv, setup)
        except sessions.NotStarted as exc:
            status = returncode = exc.code
            return
        except PamError as exc:  # PAM refused or failed: nothing ran
            _refuse(session, audit, who, str(exc))
            return
        status = returncode if returncode >= 0 else 128 - returncode
    except (OSError, KeyError, asyncssh.Error) as exc:
        logger.warning("session failed", extra={"login": login, "reason": str(exc)})
        session.say(f"session failed on the node: {exc}\n")
    finally:
        # Whatever ended the session (its command, a lost client, a failed channel, the
        # agent stopping, a cancelled task), its events are written before anything else
        # can fail: the channel may be gone, and writing to it must not skip them.
        session.recorder = None
        session.on_resize = None
        try:
            if session.watch is not None:
                session.watch.finish()  # files left open are reported before the end
            if resizes is not None:
                resizes.close()  # the last size, if one is still waiting
            if recorder is not None:
                recorder.close(status)
            if setup is not None:
                await setup.close()  # its logout record, however it ended
        finally:
            _audit_end(session, audit, who, status)
            host.live.discard(session)
            channel.finish(returncode)


def _refuse(session: NodeSession, audit: events.EventSink, who: dict[str, str], why: str) -> None:
    """The session does not start: its start event says why, and the user is told."""
    logger.warning("session refused", extra={"session_id": who["session_id"], "reason": why})
    audit.put(
        events.event(
            EventType.SESSION_START,
            outcome="E",
            **who,
            terminal=bool(session.channel.term_type),
            recorded=False,
            error=why[:500],
        )
    )
    session.say(f"jumpgate: session refused: {why}\r\n")


def _refuse_unrecorded(
    session: NodeSession, audit: events.EventSink, who: dict[str, str], exc: OSError
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
            terminal=bool(session.channel.term_type),
            recorded=False,
            error=f"refused: the session could not be recorded ({exc})"[:500],
        )
    )
    session.say(
        "jumpgate: session refused: it could not be recorded on the node "
        "(the agent's data dir may be full or read-only); ask the node's admin\r\n",
    )


def _audit_end(
    session: NodeSession, audit: events.EventSink, who: dict[str, str], status: int
) -> None:
    ended: dict[str, Any] = {"reason": session.ended_by} if session.ended_by else {}
    audit.put(events.event(EventType.SESSION_END, **who, exit_code=status, **ended))
    command = session.channel.command
    if command is not None:
        outcome = "I" if status == 0 else "E"
        audit.put(
            events.event(
                EventType.EXEC,
                outcome=outcome,
                **who,
                command=command,  # bounded by ``events.event``, which says if cut
                exit_code=status,
            )
        )

"""The node's SSH server, reached through the tunnel (no listening port).

A user certificate is accepted when the tenant's user CA signed it, it is within its
validity and the requested login is one of its principals (asyncssh checks the last two).
An agent that is not root serves only its own user, as a non-root sshd would.

Each session channel is a ``node_session.NodeSession``; its handler runs in the
connection's task group (``NodeServer.supervise``), so no session task runs unwatched.
Port forwards are ``forwarding.Forwarding``'s, the login's agent socket
``agent_forwarding.AgentSocket`` (docs/decisions/0028); asyncssh checks the certificate's
``permit-port-forwarding`` and ``permit-agent-forwarding`` before either is asked for.
"""

import asyncio
import contextlib
import logging
import os
import pwd
import uuid
from collections.abc import Coroutine
from typing import Any, Protocol

import asyncssh

from jumpgate.node_agent import audit as events
from jumpgate.node_agent import origin, sessions
from jumpgate.node_agent.agent_forwarding import AgentSocket
from jumpgate.node_agent.asyncssh_adapter import open_agent_connection
from jumpgate.node_agent.audit_budget import Budgets
from jumpgate.node_agent.forwarding import MAX_FORWARDS, Forwarding, relay
from jumpgate.node_agent.node_session import NodeSession
from jumpgate.node_agent.session_setup import SetupPolicy
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from jumpgate.protocol.ssh_identity import cert_identity
from jumpgate.protocol.tunnel_messages import SessionOrigin
from jumpgate.protocol.version import server_version

logger = logging.getLogger(__name__)

AGENT_STOPPED = "the agent stopped"
SERVER_VERSION = f"OpenSSH_compatible Jumpgate_{server_version()}"
"""The node's SSH version string. OpenSSH's client sends ``eow@openssh.com`` (its output
failed: ``ssh host yes | head -1``) only to a server whose version matches ``OpenSSH*``;
without it the command never learns that nobody reads it and never ends (decision 0027)."""
MAX_SESSIONS = 10
"""Session channels one user connection may hold open at once (OpenSSH's ``MaxSessions``)."""


class Connection(Protocol):
    """What ``NodeServer.supervise`` needs of the user's connection."""

    async def wait_closed(self) -> None: ...

    def close(self) -> None: ...


class LiveSessions:
    """The sessions this agent is serving, so that stopping the agent ends each of them
    the way a lost client does, with its events written."""

    def __init__(self) -> None:
        self._sessions: dict[NodeSession, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, session: NodeSession) -> asyncio.Event:
        done = self._sessions[session] = asyncio.Event()
        return done

    def discard(self, session: NodeSession) -> None:
        done = self._sessions.pop(session, None)
        if done is not None:
            done.set()

    async def end_all(self, reason: str = AGENT_STOPPED, *, seconds: float = 5.0) -> None:
        """Hang up on every live session (its command gets SIGHUP, as from sshd) and wait up
        to ``seconds`` for their handlers to write their events."""
        waiting = list(self._sessions.items())
        for session, _ in waiting:
            session.ended_by = reason
            session.say(f"jumpgate: the session ended: {reason} on the node\r\n")
            session.channel.close()
        if waiting:
            logger.info("ending live sessions", extra={"sessions": len(waiting), "reason": reason})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(done.wait() for _, done in waiting)), seconds
                )


class NodeServer(asyncssh.SSHServer):
    """One user connection arriving through the tunnel.

    It may hold ``max_sessions`` session channels open at once (OpenSSH's ``MaxSessions``,
    10): each one is a process, and a descriptor or more, on this node. The proxy cannot
    count them: it carries the user's SSH connection end to end, bytes it cannot read.
    It forwards ports (``-L``, ``-D``, ``-R``) and the user's agent (``-A``) as sshd does.
    """

    def __init__(
        self,
        user_ca_keys: list[str],
        audit: events.EventSink,
        uploads: Uploader,
        live: LiveSessions | None = None,
        max_sessions: int = MAX_SESSIONS,
        budgets: Budgets | None = None,
        setup: SetupPolicy | None = None,
        max_forwards: int = MAX_FORWARDS,
        told: SessionOrigin | None = None,
    ) -> None:
        self._told = told  # the session's origin, when a dial-back request said it (0030)
        self._user_ca_keys = list(user_ca_keys)  # any of them (decision 0022)
        self.audit = audit
        self.budgets = budgets if budgets is not None else Budgets()  # the agent's, shared
        self.uploads = uploads
        self.live = live if live is not None else LiveSessions()
        self.setup = setup if setup is not None else SetupPolicy()  # env, utmp, PAM (sshd's)
        self._conn: asyncssh.SSHServerConnection | None = None
        self._max_sessions = max_sessions
        self._sessions = 0  # session channels open on this connection
        self._tasks: asyncio.TaskGroup | None = None  # while ``supervise`` runs
        self._waiting: list[Coroutine[Any, Any, None]] = []  # handlers before it began
        self._supervisor: asyncio.Task[None] | None = None  # held: the loop holds tasks weakly
        self._supervised = False  # ``supervise`` has ended: nothing more is run
        # The effective user, not $USER: an agent started by sudo or setpriv keeps root's env.
        self._own_user = pwd.getpwuid(os.geteuid()).pw_name
        self.connection_id = str(uuid.uuid4())  # names this connection in its port events
        self._max_forwards = max_forwards
        self._forwarding: Forwarding | None = None  # made at the first forward asked for
        self._agent: AgentSocket | None = None  # the login's SSH_AUTH_SOCK, once a session asks
        self._agent_made = asyncio.Lock()

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        origin.record(conn, self._told)
        self._supervisor = asyncio.get_running_loop().create_task(self.supervise(conn))

    async def supervise(self, conn: Connection) -> None:
        """Run this connection's session handlers in one task group until the connection
        has closed and every handler has finished (each writes its events as it ends).

        A handler failing with an error it does not expect ends the connection, as asyncssh
        does with the tasks it runs itself: its other sessions are cancelled, which ends
        them with their events written, and the user's client is disconnected."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                waiting, self._waiting = self._waiting, []
                for handler in waiting:
                    tasks.create_task(handler)
                await conn.wait_closed()
        except Exception:
            logger.exception("session handler failed: the user's connection is closed")
            conn.close()
        finally:
            self._tasks = None
            self._supervised = True
            for handler in self._waiting:
                handler.close()  # the connection closed before its session could start
            self._waiting.clear()

    def spawn(self, handler: Coroutine[Any, Any, None]) -> None:
        """Run a session's handler under ``supervise``."""
        if self._supervised:
            handler.close()  # the connection is gone: its session never starts
        elif self._tasks is None:
            self._waiting.append(handler)  # ``supervise`` starts it as it begins
        else:
            self._tasks.create_task(handler)

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
        return NodeSession(self, self.spawn, on_closed=self._session_closed).channel

    def _session_closed(self) -> None:
        self._sessions -= 1

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        return self._forwards().direct(dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        return self._forwards().listen(listen_host, listen_port)

    def unix_connection_requested(self, dest_path: str) -> Any:
        return self._forwards().direct_unix(dest_path)

    def unix_server_requested(self, listen_path: str) -> Any:
        return self._forwards().listen_unix(listen_path)

    def _forwards(self) -> Forwarding:
        if self._forwarding is None:
            assert self._conn is not None
            identity = cert_identity(self._conn)
            login = str(self._conn.get_extra_info("username"))
            came = origin.origin(self._conn)  # the proxy's session and the user (0030)
            who = {
                "user": identity.user if identity else "",
                "login": login,
                "connection_id": self.connection_id,
                "session_id": came.session_id or self.connection_id,
                **(
                    {"remote_addr": f"{came.client_addr}:{came.client_port}"}
                    if came.client_addr
                    else {}
                ),
            }
            self._forwarding = Forwarding(
                self._conn,
                (self.budgets, self.audit),
                who,
                self.spawn,
                account=sessions.Account.lookup(login),
                max_forwards=self._max_forwards,
            )
        return self._forwarding

    async def agent_socket(
        self, channel: asyncssh.SSHServerChannel[bytes], account: sessions.Account
    ) -> str | None:
        """The login's ``SSH_AUTH_SOCK`` if the user forwards an agent (``ssh -A``, which
        asyncssh granted only with ``permit-agent-forwarding``); one per connection."""
        if channel.get_agent_path() is None:
            return None
        async with self._agent_made:
            if self._agent is None:
                try:
                    self._agent = await AgentSocket.open(
                        lambda r, w: self.spawn(self._relay_agent(r, w)),
                        uid=account.uid,
                        gid=account.gid,
                    )
                except OSError as exc:
                    logger.warning("no agent socket", extra={"reason": str(exc)})
                    return None
        return self._agent.path

    async def _relay_agent(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        assert self._conn is not None
        try:
            theirs = await open_agent_connection(self._conn)
        except (asyncssh.Error, OSError):
            writer.close()
            return
        await relay((reader, writer), theirs)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._forwarding is not None:
            self._forwarding.close()
        if self._agent is not None:
            self._agent.close()

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if os.geteuid() != 0 and username != self._own_user:
            return False
        try:
            sessions.Account.lookup(username)
        except KeyError:
            logger.info("login refused: no such OS user", extra={"login": username})
            return False
        if sessions.expired(username):  # as sshd: pam_unix's account stage, or its own check
            logger.info("login refused: the OS account has expired", extra={"login": username})
            return False
        return certs.is_trusted(key.export_public_key("openssh").decode(), self._user_ca_keys)

"""The node's SSH server, reached through the tunnel (no listening port).

A user certificate is accepted when the tenant's user CA signed it, it is within its
validity and the requested login is one of its principals (asyncssh checks the last two).
An agent that is not root serves only its own user, as a non-root sshd would.

Each session channel is a ``node_session.NodeSession``; its handler runs in the
connection's task group (``NodeServer.supervise``), so no session task runs unwatched.
Port forwards are ``forwarding.Forwarding``'s, the login's agent socket
``agent_forwarding.AgentSocket`` (docs/decisions/0028); asyncssh checks the certificate's
``permit-port-forwarding`` and ``permit-agent-forwarding`` before either is asked for.

The tenant's roles and locks are decided again here, at authentication and on every new
channel, and a lock the proxy pushes ends the connections it matches
(``access_guard.ConnectionGuard``, docs/decisions/0034).
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
from jumpgate.node_agent.access_guard import ConnectionGuard
from jumpgate.node_agent.agent_forwarding import AgentSocket
from jumpgate.node_agent.asyncssh_adapter import open_agent_connection
from jumpgate.node_agent.audit_budget import Budgets
from jumpgate.node_agent.forwarding import MAX_FORWARDS, Forwarding, relay
from jumpgate.node_agent.node_session import NodeSession
from jumpgate.node_agent.policy_cache import NodeFacts, NodePolicy
from jumpgate.node_agent.session_setup import SetupPolicy
from jumpgate.node_agent.uploads import Uploader
from jumpgate.protocol import certs
from jumpgate.protocol.audit import EventType
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
CLOSE_WAIT_SECONDS = 1.0
"""How long a connection the policy ends waits for its sessions' close before the disconnect:
an OpenSSH client exits at a disconnect without writing out what it still holds."""


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
        policy: NodePolicy | None = None,
        node: NodeFacts | None = None,
    ) -> None:
        self._policy = policy  # the tenant's roles and locks, as the proxy pushed them
        self._node = node  # this node's names and labels, which roles and locks match
        self.guard: ConnectionGuard | None = None  # made once the user has authenticated
        self._open: set[NodeSession] = set()  # session channels open on this connection
        self._told = told  # the session's origin, when a dial-back request said it (0030)
        self._user_ca_keys = list(user_ca_keys)  # any of them (decision 0022)
        self.audit = audit
        self.budgets = budgets if budgets is not None else Budgets()  # the agent's, shared
        self.uploads = uploads
        self.live = live if live is not None else LiveSessions()
        self.setup = setup if setup is not None else SetupPolicy()  # env, utmp, PAM (sshd's)
        self._conn: asyncssh.SSHServerConnection | None = None
        self._max_sessions = max_sessions
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

    @property
    def connection(self) -> asyncssh.SSHServerConnection | None:
        return self._conn

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

    async def auth_completed(self) -> None:
        """Decide, before any channel opens, whether the certificate's roles allow this
        login here; refused, the user reads why as the connection is closed."""
        conn = self._conn
        assert conn is not None
        login = str(conn.get_extra_info("username"))
        guard = self.guard = ConnectionGuard(
            cert_identity(conn),
            login,
            policy=self._policy,
            node=self._node,
            end=self._end,
            has_traits=conn.get_certificate_option(certs.EXT_TRAITS) is not None,
        )
        try:
            refused = await guard.admit()
            if refused is not None:
                self._rejected("login", refused)
                guard.end(refused)
                return
            guard.start()
        finally:
            guard.settle()

    async def admitted(self) -> str | None:
        """None once the connection is admitted, else the user's one line."""
        return await self.guard.settled() if self.guard is not None else None

    def _check(self, channel: str) -> None:
        """Refuse a new channel the policy no longer allows, with the user's one line."""
        guard = self.guard
        if guard is None:
            return
        guard.touch()
        refused = guard.refusal()
        if refused is None and guard.pending and channel != "session":
            refused = "the node is still checking your roles: try again in a moment"
        if refused is not None:
            self._rejected(channel, refused)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refused)

    def _rejected(self, channel: str, reason: str) -> None:
        logger.info("refused by the node's policy", extra={"channel": channel, "reason": reason})
        self.audit.put(
            events.event(
                EventType.SESSION_REJECTED,
                outcome="W",
                **self._who(),
                channel=channel,
                error=reason,
            )
        )

    def _end(self, message: str) -> None:
        """End the connection as the policy says: ``message`` on each open session's stderr
        (recorded as why it ended) and the session closed, then, once the client has
        closed them (so that it writes the line out first), an SSH disconnect carrying it."""
        for session in list(self._open):
            session.ended_by = message
            pty = bool(session.channel.term_type)
            session.say(f"\r\njumpgate: {message}\r\n" if pty else f"jumpgate: {message}\n")
            session.channel.close()
        self.spawn(self._disconnect(message))

    async def _disconnect(self, message: str) -> None:
        for _ in range(int(CLOSE_WAIT_SECONDS / 0.05)):
            if not self._open:
                break
            await asyncio.sleep(0.05)
        if self._conn is not None:
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    def heard(self) -> None:
        """The user typed or sent something: the connection is not idle."""
        if self.guard is not None:
            self.guard.touch()

    def session_requested(self) -> "asyncssh.SSHServerSession[bytes]":
        self._check("session")
        if len(self._open) >= self._max_sessions:
            logger.info(
                "session refused: too many on one connection", extra={"limit": self._max_sessions}
            )
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                f"too many sessions on this connection (at most {self._max_sessions} open at"
                " once): close one, or open another connection",
            )
        session = NodeSession(self, self.spawn, on_closed=lambda: self._open.discard(session))
        self._open.add(session)
        return session.channel

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        self._check("direct-tcpip")
        return self._forwards().direct(dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        if self.guard is not None and self.guard.pending:  # ``ssh -R`` asks at once
            return self._listen_once_admitted(listen_host, listen_port)
        return self._forwards().listen(listen_host, listen_port)  # refused there, as False

    async def _listen_once_admitted(self, listen_host: str, listen_port: int) -> Any:
        if await self.admitted() is not None:
            return False
        listener = self._forwards().listen(listen_host, listen_port)
        return await listener if asyncio.iscoroutine(listener) else listener

    def unix_connection_requested(self, dest_path: str) -> Any:
        self._check("direct-streamlocal")
        return self._forwards().direct_unix(dest_path)

    def unix_server_requested(self, listen_path: str) -> Any:
        if self.guard is not None and self.guard.pending:  # ``ssh -R PATH`` asks at once too
            return self._listen_unix_once_admitted(listen_path)
        return self._forwards().listen_unix(listen_path)

    async def _listen_unix_once_admitted(self, listen_path: str) -> Any:
        if await self.admitted() is not None:
            return False
        listener = self._forwards().listen_unix(listen_path)
        return await listener if asyncio.iscoroutine(listener) else listener

    def _who(self) -> dict[str, str]:
        """Who this connection is, as its port and refusal events name it."""
        assert self._conn is not None
        identity = cert_identity(self._conn)
        came = origin.origin(self._conn)  # the proxy's session and the user (0030)
        return {
            "user": identity.user if identity else "",
            "login": str(self._conn.get_extra_info("username")),
            "connection_id": self.connection_id,
            "session_id": came.session_id or self.connection_id,
            **(
                {"remote_addr": f"{came.client_addr}:{came.client_port}"}
                if came.client_addr
                else {}
            ),
        }

    def _forwards(self) -> Forwarding:
        if self._forwarding is None:
            assert self._conn is not None
            who = self._who()
            guard = self.guard
            self._forwarding = Forwarding(
                self._conn,
                (self.budgets, self.audit),
                who,
                self.spawn,
                account=sessions.Account.lookup(who["login"]),
                max_forwards=self._max_forwards,
                guard=guard.refusal if guard is not None else lambda: None,
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
        if self.guard is not None and self.guard.refusal() is not None:
            writer.close()  # the user's agent is not reached for a locked or expired user
            return
        try:
            theirs = await open_agent_connection(self._conn)
        except (asyncssh.Error, OSError):
            writer.close()
            return
        await relay((reader, writer), theirs)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.guard is not None:
            self.guard.close()
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

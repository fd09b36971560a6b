"""What sshd does around a session's command besides running it: its environment
(``session_env``), its utmp/wtmp login record on a PTY (``login_records``) and, if the node's
config enables it, its PAM account and session stages, run by the command's own launcher
process (``pam_launch``, ``pam_launcher``), never by the agent.

``open_setup`` runs as the session starts; ``sessions.run`` asks the ``SessionSetup`` for the
command's environment (or its launcher), tells it when the session opened (``opened``: PAM's
stages passed, if any), when the command started on a PTY and when it ended.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpgate.node_agent import session_env
from jumpgate.node_agent.login_records import LoginRecord, LoginRecords
from jumpgate.node_agent.pam_launch import Launcher
from jumpgate.node_agent.sessions import Account

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupPolicy:
    """The node's settings for setting sessions up (from ``AgentConfig``)."""

    accept_env: tuple[str, ...] = session_env.DEFAULT_ACCEPT_ENV  # sshd's AcceptEnv
    pam_service: str | None = None  # the PAM service run for each session; None: no PAM
    records: LoginRecords | None = field(  # utmp/wtmp (None: kept by none, not root)
        default_factory=lambda: LoginRecords() if LoginRecords.kept() else None
    )
    pam_confdir: Path | None = None  # the PAM services' directory; None: /etc/pam.d


class SessionSetup:
    """One session's setup: what ``sessions.run`` calls (``sessions.Setup``)."""

    def __init__(
        self,
        account: Account,
        context: session_env.SessionContext,
        launcher: Launcher | None = None,
        records: LoginRecords | None = None,
    ) -> None:
        self.account = account
        self.context = context
        self.launcher = launcher
        self.on_opened: Callable[[], None] | None = None  # the session starts (node_session)
        self._records = records
        self._record: LoginRecord | None = None

    def environment(self, term: str | None, tty: str | None = None) -> dict[str, str]:
        return session_env.build(self.account, context=self.context, term=term, tty=tty)

    def layers(
        self, term: str | None, tty: str | None = None
    ) -> tuple[dict[str, str], dict[str, str]]:
        return session_env.layers(self.account, context=self.context, term=term, tty=tty)

    def opened(self) -> None:
        """The session starts (once): ``on_opened`` may refuse it (``sessions.NotStarted``)."""
        opened, self.on_opened = self.on_opened, None
        if opened is not None:
            opened()

    def started(self, pid: int, tty: str) -> None:
        """The command runs on ``tty``: its login record, if this node keeps them."""
        if self._records is None:
            return
        record = LoginRecord(tty, self.account.name, self.context.origin.client_host, pid)
        try:
            self._records.login(record)
            self._record = record
        except OSError as exc:
            logger.warning("login record not written", extra={"reason": str(exc)})

    def ended(self) -> None:
        """The command on the PTY has exited: its logout record."""
        record, self._record = self._record, None
        if record is not None and self._records is not None:
            try:
                self._records.logout(record)
            except OSError as exc:
                logger.warning("logout record not written", extra={"reason": str(exc)})

    async def close(self) -> None:
        """After the session: its logout record, if still due (PAM's session is closed by
        the command's launcher)."""
        self.ended()


async def open_setup(policy: SetupPolicy, process: Any, account: Account) -> SessionSetup:
    """Set up ``process``'s session for ``account`` (PAM's stages run as its command
    starts, in its launcher)."""
    requested = process.channel.get_environment()
    where = session_env.origin(process.channel.get_connection())
    context = session_env.SessionContext(
        session_env.accepted(requested, policy.accept_env),
        where,
        pam=policy.pam_service is not None,
    )
    launcher = None
    if policy.pam_service is not None:
        launcher = Launcher(policy.pam_service, account.name, where.client_host, policy.pam_confdir)
    return SessionSetup(account, context, launcher, policy.records)

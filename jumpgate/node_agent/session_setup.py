"""What sshd does around a session's command besides running it: its environment
(``session_env``), its utmp/wtmp login record on a PTY (``login_records``) and, if the node's
config enables it, its PAM account and session stages (``pam_session``).

``open_setup`` runs as the session starts (PAM's stages, in a thread); ``sessions.run`` asks
the ``SessionSetup`` for the command's environment and tells it when the command started on
a PTY and when it ended; ``close`` ends the PAM session after the command, however it ended.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpgate.node_agent import session_env
from jumpgate.node_agent.login_records import LoginRecord, LoginRecords
from jumpgate.node_agent.pam_session import PamSession
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
        pam: PamSession | None = None,
        records: LoginRecords | None = None,
    ) -> None:
        self.account = account
        self.context = context
        self.pam = pam
        self._records = records
        self._record: LoginRecord | None = None

    def environment(self, term: str | None, tty: str | None = None) -> dict[str, str]:
        return session_env.build(
            self.account,
            context=self.context,
            term=term,
            tty=tty,
            pam_env=self.pam.environment if self.pam is not None else None,
        )

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
        """End the PAM session, if one was opened."""
        self.ended()
        pam, self.pam = self.pam, None
        if pam is not None:
            await asyncio.to_thread(pam.close)


async def open_setup(policy: SetupPolicy, process: Any, account: Account) -> SessionSetup:
    """Set up ``process``'s session for ``account``: ``pam_session.PamRefused`` if PAM's
    account stage refuses it, ``PamError`` if PAM fails."""
    requested = process.channel.get_environment()
    where = session_env.origin(process.channel.get_connection())
    context = session_env.SessionContext(
        session_env.accepted(requested, policy.accept_env),
        where,
        pam=policy.pam_service is not None,
    )
    pam = None
    if policy.pam_service is not None:
        pam = await _open_pam(policy.pam_service, account.name, where.client_host, policy)
    return SessionSetup(account, context, pam, policy.records)


async def _open_pam(service: str, user: str, rhost: str, policy: SetupPolicy) -> PamSession:
    opening = asyncio.ensure_future(
        asyncio.to_thread(PamSession.open, service, user, rhost=rhost, confdir=policy.pam_confdir)
    )
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The session went while PAM ran: the session PAM opened all the same is closed.
        with contextlib.suppress(Exception):
            opened = await opening
            await asyncio.to_thread(opened.close)
        raise

"""A session's PAM transaction, as sshd (``UsePAM yes``) and Teleport's node run it.

The user was authenticated by the certificate, not by PAM: only PAM's account and session
stages run, with the service the node's config names (``pam.service_name``, ``sshd`` by
default, so the node gets the machine's ``/etc/pam.d/sshd`` stack). ``PamSession.open``:
``pam_start`` (``PAM_RHOST`` the user's address, ``PAM_TTY`` the PTY's path, or ``ssh`` as
sshd sets it without one), ``pam_acct_mgmt`` (refused: ``PamRefused`` with one line for the
user), ``pam_setcred(PAM_ESTABLISH_CRED)``, ``pam_open_session``; then the environment the
modules set (``pam_getenvlist``) goes into the session's. ``close``: ``pam_close_session``,
``pam_setcred(PAM_DELETE_CRED)`` and ``pam_end``.

Modules act on the process that calls them (``pam_loginuid`` writes its loginuid,
``pam_limits`` sets its rlimits, ``pam_keyinit`` makes its keyring), so the agent never calls
them itself: each session's ``pam_launcher`` does, in the process its command is forked from.
libpam is called through ctypes (no PyPI binding offers session stages and the environment
list on one handle, nor ``pam_start_confdir``).

Errors::

    PamError            libpam is missing or a stage failed (the session does not start)
    └── PamRefused      the account stage said no: the user is told why
"""

import ctypes
import ctypes.util
import fnmatch
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAM_SUCCESS = 0
PAM_TTY = 3
PAM_RHOST = 4
PAM_CONV_ERR = 19
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4
PAM_SILENT = 0x8000
PAM_ESTABLISH_CRED = 0x0002
PAM_DELETE_CRED = 0x0004
PAM_DENIED = ("SSH_AUTH_INFO*", "SSH_CONNECTION*")
"""What PAM's environment may not set in a session's (sshd's denylist)."""


class PamError(Exception):
    """PAM could not run the session's stages."""


class PamRefused(PamError):
    """PAM's account stage refused the login."""


class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_char_p), ("resp_retcode", ctypes.c_int)]


_CONVERSE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(_Message)),
    ctypes.POINTER(ctypes.POINTER(_Response)),
    ctypes.c_void_p,
)


class _Conversation(ctypes.Structure):
    _fields_ = [("conv", _CONVERSE), ("appdata_ptr", ctypes.c_void_p)]


def merged(
    before: Mapping[str, str], pam_env: Mapping[str, str], after: Mapping[str, str]
) -> dict[str, str]:
    """A session's environment as sshd layers it: ``before`` (the client's and the login's),
    PAM's over it except ``PAM_DENIED``, ``after`` (``SSH_CONNECTION``...) over both."""
    env = dict(before)
    for key, value in pam_env.items():
        if not any(fnmatch.fnmatchcase(key, denied) for denied in PAM_DENIED):
            env[key] = value
    env.update(after)
    return env


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    name = ctypes.util.find_library("pam")
    if name is None:
        raise PamError("PAM is enabled but libpam is not installed: install libpam0g on the node")
    pam = ctypes.CDLL(name)
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    handle = ctypes.POINTER(ctypes.c_void_p)
    pam.pam_start.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(_Conversation),
        ctypes.POINTER(handle),
    ]
    pam.pam_start_confdir.argtypes = [
        *pam.pam_start.argtypes[:3],
        ctypes.c_char_p,
        pam.pam_start.argtypes[3],
    ]
    pam.pam_set_item.argtypes = [handle, ctypes.c_int, ctypes.c_void_p]
    stages = ("pam_acct_mgmt", "pam_setcred", "pam_open_session", "pam_close_session", "pam_end")
    for stage in stages:
        getattr(pam, stage).argtypes = [handle, ctypes.c_int]
    pam.pam_strerror.argtypes = [handle, ctypes.c_int]
    pam.pam_strerror.restype = ctypes.c_char_p
    pam.pam_getenvlist.argtypes = [handle]
    pam.pam_getenvlist.restype = ctypes.POINTER(ctypes.c_void_p)
    return pam, libc


def _strerror(pam: ctypes.CDLL, code: int, handle: object = None) -> str:
    text = pam.pam_strerror(handle, code)  # Linux-PAM needs no handle for its text
    return text.decode(errors="replace") if text else f"error {code}"


@dataclass
class PamSession:
    """One session's PAM handle, from ``open`` to ``close``."""

    service: str
    user: str
    messages: list[str] = field(default_factory=list)  # what the modules said to the user
    environment: dict[str, str] = field(default_factory=dict)  # set by the session stage
    _handle: ctypes.POINTER(ctypes.c_void_p) | None = None  # type: ignore[valid-type]
    _opened: bool = False
    _credited: bool = False  # pam_setcred established credentials: deleted at close
    _keep: object = None  # the conversation callback: alive as long as libpam may call it
    _pam: ctypes.CDLL | None = None
    _libc: ctypes.CDLL | None = None

    @classmethod
    def open(
        cls, service: str, user: str, *, rhost: str, tty: str = "ssh", confdir: Path | None = None
    ) -> "PamSession":
        """Start the transaction and run the account and session stages (blocks).
        ``confdir``: read the service from there, not ``/etc/pam.d`` (tests)."""
        session = cls(service, user)
        try:
            session._start(rhost, tty, confdir)
        except BaseException:
            session.close()
            raise
        return session

    def _start(self, rhost: str, tty: str, confdir: Path | None) -> None:
        pam, libc = _libraries()
        conversation = _Conversation(_CONVERSE(self._converse(libc)), None)
        self._keep, self._pam, self._libc = conversation, pam, libc
        handle = ctypes.POINTER(ctypes.c_void_p)()
        if confdir is None:
            code = pam.pam_start(
                self.service.encode(),
                self.user.encode(),
                ctypes.byref(conversation),
                ctypes.byref(handle),
            )
        else:
            code = pam.pam_start_confdir(
                self.service.encode(),
                self.user.encode(),
                ctypes.byref(conversation),
                str(confdir).encode(),
                ctypes.byref(handle),
            )
        if code != PAM_SUCCESS:
            raise PamError(
                f"PAM could not start service {self.service!r} ({_strerror(pam, code)}); "
                "ask the node's admin to check its pam settings"
            )
        self._handle = handle
        for item, value in ((PAM_RHOST, rhost), (PAM_TTY, tty)):
            text = ctypes.c_char_p(value.encode())
            self._check(pam.pam_set_item(handle, item, text), "pam_set_item")
        code = pam.pam_acct_mgmt(handle, 0)
        if code != PAM_SUCCESS:
            said = "; ".join(self.messages) or self._say(code)
            raise PamRefused(
                f"PAM (service {self.service!r}) refused login {self.user!r}: {said}; "
                "ask the node's admin"
            )
        # The certificate authenticated the user, so a stack may have no auth modules to set
        # credentials with (pam_setcred fails then): only those it did set are deleted.
        self._credited = pam.pam_setcred(handle, PAM_ESTABLISH_CRED) == PAM_SUCCESS
        self._check(pam.pam_open_session(handle, 0), "pam_open_session")
        self._opened = True
        self.environment = self._environment()

    def _converse(self, libc: ctypes.CDLL) -> Callable[[int, Any, Any, Any], int]:
        """The conversation: modules' messages are kept for the user; no module may prompt
        (the user authenticated with a certificate and no terminal is asked)."""

        def converse(count: int, messages: Any, responses: Any, _data: Any) -> int:
            try:
                return answer(count, messages, responses)
            except Exception:  # an exception must not cross into libpam
                logger.exception("PAM conversation failed")
                return PAM_CONV_ERR

        def answer(count: int, messages: Any, responses: Any) -> int:
            for index in range(count):
                message = messages[index].contents
                if message.msg_style not in (PAM_ERROR_MSG, PAM_TEXT_INFO):
                    return PAM_CONV_ERR
                text = (message.msg or b"").decode(errors="replace").strip()
                if text:
                    self.messages.append(text)
            replies = libc.calloc(count, ctypes.sizeof(_Response))
            if not replies:
                return PAM_CONV_ERR
            responses[0] = ctypes.cast(replies, ctypes.POINTER(_Response))
            return PAM_SUCCESS

        return converse

    def _environment(self) -> dict[str, str]:
        pam, libc = self._pam, self._libc
        assert pam is not None
        assert libc is not None
        listed = pam.pam_getenvlist(self._handle)
        found: dict[str, str] = {}
        if not listed:
            return found
        index = 0
        while listed[index]:
            entry = ctypes.string_at(listed[index]).decode(errors="replace")
            name, _, value = entry.partition("=")
            if name:
                found[name] = value
            libc.free(listed[index])
            index += 1
        libc.free(ctypes.cast(listed, ctypes.c_void_p))
        return found

    def _say(self, code: int) -> str:
        assert self._pam is not None
        return _strerror(self._pam, code, self._handle)

    def _check(self, code: int, stage: str) -> None:
        if code != PAM_SUCCESS:
            raise PamError(
                f"PAM (service {self.service!r}) {stage} failed for {self.user!r}: "
                f"{self._say(code)}; ask the node's admin"
            )

    def close(self) -> None:
        """End the session stage (if it ran) and the transaction (blocks); safe to repeat."""
        handle, self._handle = self._handle, None
        if handle is None:
            return
        pam = self._pam
        assert pam is not None
        code = PAM_SUCCESS
        if self._opened:
            self._opened = False
            code = pam.pam_close_session(handle, 0)
            if code != PAM_SUCCESS:
                logger.warning("pam_close_session failed", extra={"user": self.user, "code": code})
        if self._credited:
            self._credited = False
            pam.pam_setcred(handle, PAM_DELETE_CRED)
        pam.pam_end(handle, code)

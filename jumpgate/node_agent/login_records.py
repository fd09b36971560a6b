"""utmp and wtmp login records of PTY sessions, as sshd writes them (loginrec.c), so that
``who``, ``w`` and ``last`` show who is logged in to the node and who was.

A record is written through glibc (``pututxline`` for utmp, ``updwtmpx`` for wtmp: the same
locking and format as sshd's), by an agent running as root only. When the session starts:
a ``USER_PROCESS`` entry with the tty's line (``pts/3``), its id (the line's last 4
characters), the login, the user's host and address, and the command's pid, in utmp and
appended to wtmp; when it ends: a ``DEAD_PROCESS`` entry for the same line in utmp and a
logout entry in wtmp (no user), which ``last`` pairs with the login.

Like sshd, the agent never creates the files: a system without ``/var/run/utmp`` (a container
without an init that makes it) keeps no login records, and glibc says nothing.
"""

import ctypes
import ctypes.util
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

UTMP = "/var/run/utmp"
WTMP = "/var/log/wtmp"
DEAD_PROCESS = 8
USER_PROCESS = 7
_lock = threading.Lock()  # utmpxname sets the C library's file for the whole process


class _ExitStatus(ctypes.Structure):
    _fields_ = [("e_termination", ctypes.c_short), ("e_exit", ctypes.c_short)]


class _TimeVal(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int32), ("tv_usec", ctypes.c_int32)]


class Utmpx(ctypes.Structure):
    """glibc's ``struct utmpx`` on Linux (384 bytes; 32-bit times in its file format)."""

    _fields_ = [
        ("ut_type", ctypes.c_short),
        ("ut_pid", ctypes.c_int),
        ("ut_line", ctypes.c_char * 32),
        ("ut_id", ctypes.c_char * 4),
        ("ut_user", ctypes.c_char * 32),
        ("ut_host", ctypes.c_char * 256),
        ("ut_exit", _ExitStatus),
        ("ut_session", ctypes.c_int32),
        ("ut_tv", _TimeVal),
        ("ut_addr_v6", ctypes.c_int32 * 4),
        ("reserved", ctypes.c_char * 20),
    ]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.pututxline.argtypes = [ctypes.POINTER(Utmpx)]
    libc.pututxline.restype = ctypes.c_void_p
    libc.updwtmpx.argtypes = [ctypes.c_char_p, ctypes.POINTER(Utmpx)]
    libc.utmpxname.argtypes = [ctypes.c_char_p]
    return libc


@dataclass(frozen=True)
class LoginRecord:
    """One PTY session's line in utmp and wtmp."""

    tty: str  # the PTY slave's path, /dev/pts/3
    user: str  # the login
    host: str  # where the user is (an address)
    pid: int  # the session's command

    @property
    def line(self) -> str:
        return self.tty.removeprefix("/dev/")

    @property
    def ident(self) -> str:
        return self.line[-4:]  # sshd's line_abbrevname


class LoginRecords:
    """Writes login and logout records to ``utmp`` and ``wtmp`` (the system's by default)."""

    def __init__(self, utmp: str = UTMP, wtmp: str = WTMP) -> None:
        self.utmp = utmp
        self.wtmp = wtmp
        self._libc = _libc()

    @staticmethod
    def kept() -> bool:
        """Whether this agent writes records: as root only, as sshd."""
        return os.geteuid() == 0

    def login(self, record: LoginRecord) -> None:
        """The session has started on its tty: ``who`` shows it, ``last`` will."""
        entry = self._entry(record, USER_PROCESS)
        entry.ut_user = record.user.encode()[:32]
        entry.ut_host = record.host.encode()[:256]
        entry.ut_session = record.pid  # the command leads its own session (setsid)
        entry.ut_addr_v6[:] = _address(record.host)
        self._write(entry)

    def logout(self, record: LoginRecord) -> None:
        """The session has ended: its utmp entry is dead, wtmp has its logout."""
        self._write(self._entry(record, DEAD_PROCESS))

    def _entry(self, record: LoginRecord, kind: int) -> Utmpx:
        entry = Utmpx()
        entry.ut_type = kind
        entry.ut_pid = record.pid
        entry.ut_line = record.line.encode()[:32]
        entry.ut_id = record.ident.encode()[:4]
        now = time.time()
        entry.ut_tv.tv_sec = int(now)
        entry.ut_tv.tv_usec = int((now % 1) * 1_000_000)
        return entry

    def _write(self, entry: Utmpx) -> None:
        libc = self._libc
        with _lock:
            libc.utmpxname(self.utmp.encode())
            libc.setutxent()
            try:
                written = libc.pututxline(ctypes.byref(entry))
            finally:
                libc.endutxent()
                libc.utmpxname(UTMP.encode())
            if not written and os.path.exists(self.utmp):
                logger.warning(
                    "login record not written",
                    extra={"file": self.utmp, "errno": ctypes.get_errno()},
                )
            if os.path.exists(self.wtmp):
                libc.updwtmpx(self.wtmp.encode(), ctypes.byref(entry))


def _address(host: str) -> list[int]:
    """``ut_addr_v6`` of ``host``: an IPv4 address in its first word, IPv6 in all four."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [0, 0, 0, 0]
    packed = address.packed.ljust(16, b"\0")
    return [int.from_bytes(packed[i : i + 4], "little", signed=True) for i in range(0, 16, 4)]

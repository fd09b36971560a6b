"""File transfers seen on the node, for the audit log: SFTP packets and legacy SCP streams.

The node relays both between the user's channel and the process serving them (OpenSSH's
``sftp-server``, the login's ``scp``); these watchers read the same bytes on the way past
and report each file: its path, what was done and how many bytes moved. They never change
or hold back the data. Names are reported whatever bytes they hold (undecodable ones escaped),
files still open when the session ends are reported with what moved so far, and a stream a
watcher cannot follow is reported (``unfollowed``) and stopped: it fails closed, as a protocol
error would, rather than let the rest of it through unwatched (issue 14, transfers).
"""

import logging
import os
import posixpath
import shlex
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

SCP_SERVER_FLAGS = frozenset("dfprtv")
"""What OpenSSH's scp client puts on the command line of the remote end (with ``--``)."""
_PLAIN = frozenset(" -_./,:@%+='\"")
"""Characters a transfer's command may hold besides letters and digits: none means anything
to a shell beyond quoting, so splitting it as the shell would is the whole of its meaning."""

Report = Callable[[str, dict[str, Any]], None]
"""Called with an outcome (``I``/``W``) and the event's fields."""
Stop = Callable[[], None]
"""Ends the transfer's channel: what a watcher does to a stream it cannot follow."""

MAX_PACKET = 512 * 1024
MAX_SCP_LENGTH = 2**63 - 1
"""The largest file an scp C-line may announce: OpenSSH's scp refuses more (``off_t``)."""
FXP = {
    "OPEN": 3,
    "CLOSE": 4,
    "READ": 5,
    "WRITE": 6,
    "SETSTAT": 9,
    "FSETSTAT": 10,
    "REMOVE": 13,
    "MKDIR": 14,
    "RMDIR": 15,
    "RENAME": 18,
    "SYMLINK": 20,
    "STATUS": 101,
    "HANDLE": 102,
    "DATA": 103,
    "EXTENDED": 200,
}
FXF_CHANGES = 0x02 | 0x04 | 0x08 | 0x10
"""OPEN flags that can change the file (WRITE, APPEND, CREAT, TRUNC): such an open is a write
even if nothing is written through it (a TRUNC empties the file at open)."""
_PATH_ACTIONS = {
    FXP["SETSTAT"]: "setstat",
    FXP["REMOVE"]: "remove",
    FXP["MKDIR"]: "mkdir",
    FXP["RMDIR"]: "rmdir",
    FXP["RENAME"]: "rename",
    FXP["SYMLINK"]: "symlink",
}
_EXTENDED_TWO_PATHS = {
    b"posix-rename@openssh.com": "rename",  # what OpenSSH's ``sftp rename`` sends
    b"hardlink@openssh.com": "hardlink",
}
_EXTENDED_ONE_PATH = {b"lsetstat@openssh.com": "lsetstat"}
_EXTENDED_QUERIES = frozenset(
    {
        b"limits@openssh.com",
        b"statvfs@openssh.com",
        b"fstatvfs@openssh.com",
        b"expand-path@openssh.com",
        b"home-directory",
        b"users-groups-by-id@openssh.com",
        b"fsync@openssh.com",
    }
)
"""Extended requests that read or flush but change nothing: OpenSSH's clients send some in
every session, so they are not reported. Every other one is, by name."""


def _text(value: bytes) -> str:
    """A name as the audit shows it: any bytes, undecodable ones escaped (``\\xff``)."""
    return value.decode(errors="backslashreplace")


def _nothing() -> None:
    """The default ``stop``: a watcher on its own (a test) has no channel to end."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def uint32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.at)
        self.at += 4
        return int(value)

    def uint64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.at)
        self.at += 8
        return int(value)

    def string(self) -> bytes:
        length = self.uint32()
        value = self.data[self.at : self.at + length]
        self.at += length
        return value


class _Packets:
    """Whole SFTP packets out of a byte stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack_from(">I", self._buffer)
            if length > MAX_PACKET:
                raise ValueError("SFTP packet too long")
            if len(self._buffer) < 4 + length:
                break
            packets.append(bytes(self._buffer[4 : 4 + length]))
            del self._buffer[: 4 + length]
        return packets


@dataclass
class _Open:
    path: str
    writing: bool
    read: int = 0
    written: int = 0


@dataclass
class SftpWatch:
    """Follows an SFTP session: requests from the user, replies from ``sftp-server``."""

    report: Report
    stop: Stop = _nothing
    broken: bool = False
    _requests: _Packets = field(default_factory=_Packets)
    _replies: _Packets = field(default_factory=_Packets)
    _opening: dict[int, _Open] = field(default_factory=dict)
    _handles: dict[bytes, _Open] = field(default_factory=dict)
    _reads: dict[int, bytes] = field(default_factory=dict)
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)

    def from_user(self, data: bytes) -> None:
        self._guard(self._request, self._requests, data)

    def from_node(self, data: bytes) -> None:
        self._guard(self._reply, self._replies, data)

    def _guard(self, handle: Callable[[_Reader], None], packets: _Packets, data: bytes) -> None:
        if self.broken:
            return
        try:
            for packet in packets.feed(data):
                handle(_Reader(packet))
        except (ValueError, struct.error, IndexError) as exc:
            _unfollowed(self, "sftp", exc)

    def finish(self) -> None:
        """The session ended: report the files still open (with what moved so far), once."""
        handles, self._handles = self._handles, {}
        for opened in handles.values():
            self._report_file(opened, "I")
        opening, self._opening = self._opening, {}
        for opened in opening.values():
            if opened.writing:
                fields = {"action": "write", "path": opened.path, "error": "open not answered"}
                self.report("W", fields)

    def _report_file(self, opened: _Open, outcome: str) -> None:
        action = "write" if opened.writing else "read"
        length = opened.written if opened.writing else opened.read
        self.report(outcome, {"action": action, "path": opened.path, "length": length})

    def _path_of(self, handle: bytes) -> str:
        opened = self._handles.get(handle)
        return opened.path if opened is not None else f"handle {_text(handle)}"

    def _request(self, packet: _Reader) -> None:
        kind = packet.data[0]
        packet.at = 1
        if kind < FXP["OPEN"]:
            return  # INIT carries no id
        request = packet.uint32()
        if kind == FXP["OPEN"]:
            path = _text(packet.string())
            flags = packet.uint32()
            self._opening[request] = _Open(path, bool(flags & FXF_CHANGES))
        elif kind == FXP["READ"]:
            self._reads[request] = packet.string()
        elif kind == FXP["WRITE"]:
            handle = packet.string()
            packet.uint64()
            opened = self._handles.get(handle)
            if opened is not None:
                opened.written += len(packet.string())
        elif kind == FXP["CLOSE"]:
            opened = self._handles.pop(packet.string(), None)
            if opened is not None:
                self._report_file(opened, "I")
        elif kind == FXP["FSETSTAT"]:
            self._pending[request] = {"action": "fsetstat", "path": self._path_of(packet.string())}
        elif kind in _PATH_ACTIONS:
            fields: dict[str, Any] = {
                "action": _PATH_ACTIONS[kind],
                "path": _text(packet.string()),
            }
            if kind in (FXP["RENAME"], FXP["SYMLINK"]):
                fields["target"] = _text(packet.string())
            self._pending[request] = fields
        elif kind == FXP["EXTENDED"]:
            self._extended(request, packet)

    def _extended(self, request: int, packet: _Reader) -> None:
        """OpenSSH's extensions: renames, links and copies change files as the core does."""
        name = packet.string()
        fields: dict[str, Any]
        if name in _EXTENDED_QUERIES:
            return
        if name in _EXTENDED_TWO_PATHS:
            path = _text(packet.string())
            target = _text(packet.string())
            fields = {"action": _EXTENDED_TWO_PATHS[name], "path": path, "target": target}
        elif name in _EXTENDED_ONE_PATH:
            fields = {"action": _EXTENDED_ONE_PATH[name], "path": _text(packet.string())}
        elif name == b"copy-data":
            source = self._path_of(packet.string())
            packet.uint64()
            packet.uint64()
            fields = {"action": "copy-data", "path": self._path_of(packet.string())}
            fields["source"] = source
        else:
            fields = {"action": "extended", "name": _text(name)}
        self._pending[request] = fields

    def _reply(self, packet: _Reader) -> None:
        kind = packet.data[0]
        packet.at = 1
        if kind < FXP["STATUS"]:
            return  # VERSION
        request = packet.uint32()
        if kind == FXP["HANDLE"]:
            opened = self._opening.pop(request, None)
            if opened is not None:
                self._handles[packet.string()] = opened
        elif kind == FXP["DATA"]:
            handle = self._reads.pop(request, None)
            opened = self._handles.get(handle) if handle is not None else None
            if opened is not None:
                opened.read += len(packet.string())
        elif kind == FXP["STATUS"]:
            self._reads.pop(request, None)
            status = packet.uint32()
            failed_open = self._opening.pop(request, None)
            if failed_open is not None:
                error = _text(packet.string())
                self.report("W", {"action": "open", "path": failed_open.path, "error": error})
            fields = self._pending.pop(request, None)
            if fields is not None:
                if status != 0:
                    fields["error"] = _text(packet.string())
                self.report("I" if status == 0 else "W", fields)


def _unfollowed(watch: "SftpWatch | ScpWatch", protocol: str, exc: Exception) -> None:
    """``watch`` cannot follow its stream: say so in the audit and end the transfer."""
    logger.warning("%s stream not followed: transfer stopped", protocol, extra={"reason": str(exc)})
    watch.broken = True
    watch.report("W", {"action": "unfollowed", "error": f"{protocol} stream not followed: {exc}"})
    watch.stop()


def scp_server_argv(command: str | None) -> list[str] | None:
    """The argv of a bare legacy scp server end (``scp [-dprv] -t|-f [--] PATH``), or None.

    Only such a command is a file transfer: it is audited per file instead of recorded, and
    run as this argv with no shell, so what runs is exactly what was judged here. Anything
    else (another word, a second path, a client flag, a shell metacharacter) is a session,
    recorded like any other (issue 14: ``scp -f /x; sh`` was a transfer, unrecorded).
    """
    if command is None or not all(c.isalnum() or c in _PLAIN for c in command):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 3 or argv[0] != "scp":
        return None
    *flags, path = argv[1:]
    if flags and flags[-1] == "--":
        flags.pop()
    elif path.startswith("-"):
        return None
    letters = "".join(flag[1:] for flag in flags)
    if any(len(flag) < 2 or flag[0] != "-" for flag in flags):
        return None
    if not set(letters) <= SCP_SERVER_FLAGS or letters.count("t") + letters.count("f") != 1:
        return None
    return argv


@dataclass
class ScpWatch:
    """Follows a legacy ``scp -t`` (upload to the node) or ``scp -f`` (download) stream.

    The side that sends files says ``C<mode> <length> <name>`` before each file's bytes,
    ``D``/``E`` around directories; reading that side is enough to name every file.
    """

    report: Report
    upload: bool
    target: str
    target_is_dir: bool
    stop: Stop = _nothing
    broken: bool = False
    _line: bytearray = field(default_factory=bytearray)
    _dirs: list[str] = field(default_factory=list)
    _remaining: int = -1  # bytes of the current file (and its status byte) still to pass
    _file: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_argv(
        cls, argv: list[str], report: Report, home: str, stop: Stop = _nothing
    ) -> "ScpWatch":
        """A watcher of the transfer ``argv`` (from ``scp_server_argv``) runs; ``stop`` ends
        its channel."""
        upload = any("t" in word for word in argv[1:-1] if word != "--")
        target = argv[-1]
        full = target if target.startswith("/") else posixpath.join(home, target)
        return cls(report, upload, target, os.path.isdir(full), stop)

    def from_user(self, data: bytes) -> None:
        if self.upload:
            self._feed(data)

    def from_node(self, data: bytes) -> None:
        if not self.upload:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view and not self.broken:
                if self._remaining >= 0:
                    taken = min(self._remaining, len(view))
                    self._remaining -= taken
                    view = view[taken:]
                    if self._remaining == 0:
                        self._remaining = -1
                        self.report("I", self._file)
                        self._file = {}
                    continue
                newline = bytes(view).find(b"\n")
                if newline < 0:
                    self._line += view
                    if len(self._line) > 4096:
                        raise ValueError("scp control line too long")
                    return
                self._line += view[:newline]
                view = view[newline + 1 :]
                line = _text(bytes(self._line))
                self._line.clear()
                self._control(line)
        except ValueError as exc:
            _unfollowed(self, "scp", exc)

    def finish(self) -> None:
        """The session ended: a file cut short is reported with the bytes that reached it."""
        if self._file:
            moved = self._file["length"] + 1 - self._remaining
            fields = {**self._file, "length": max(moved, 0), "error": "cut short"}
            self._file = {}
            self.report("W", fields)

    def _path(self, name: str) -> str:
        """Where a file lands (upload) or comes from (download), as scp itself resolves it."""
        if not self._dirs:
            return posixpath.join(self.target, name) if self.target_is_dir else self.target
        # The first D names the copied directory: inside an existing target directory on
        # upload; the requested path itself on download.
        inner = self._dirs if (self.upload and self.target_is_dir) else self._dirs[1:]
        return posixpath.join(self.target, *inner, name)

    def _control(self, line: str) -> None:
        line = line.lstrip("\0\1\2")  # a sender's status byte may precede the next line
        if line.startswith("C"):
            _, length, name = line[1:].split(" ", 2)
            if not (length.isascii() and length.isdigit()):
                raise ValueError(f"file length {length[:20]!r} is not a number")
            self._file = {
                "action": "upload" if self.upload else "download",
                "path": self._path(name),
                "length": int(length),
            }
            if self._file["length"] > MAX_SCP_LENGTH:
                fields, self._file = {**self._file, "error": "file length refused"}, {}
                self.report("W", fields)
                self.broken = True
                self.stop()
                return
            self._remaining = int(length) + 1
        elif line.startswith("D"):
            _, _, name = line[1:].split(" ", 2)
            self._dirs.append(name)
        elif line.startswith("E") and self._dirs:
            self._dirs.pop()

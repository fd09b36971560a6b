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
import re
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
MAX_PENDING = 64 * 1024
"""Requests one SFTP session may have waiting for an answer (OpenSSH's sftp keeps 64)."""
MAX_SCP_LENGTH = 2**63 - 1
"""The largest file an scp C-line may announce: OpenSSH's scp refuses more (``off_t``)."""
FXP = {
    "OPEN": 3,
    "CLOSE": 4,
    "READ": 5,
    "WRITE": 6,
    "OPENDIR": 11,
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
    _asked: set[int] = field(default_factory=set)  # request ids not answered yet
    _opendirs: set[int] = field(default_factory=set)  # OPENDIR requests not answered yet
    _dir_handles: set[bytes] = field(default_factory=set)

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
        if kind > FXP["SYMLINK"] and kind != FXP["EXTENDED"]:
            return  # sftp-server logs an unknown type and answers nothing
        if request in self._asked:
            # sftp-server answers each request once, by its id: a second one under an id
            # still waiting would be answered in the first one's name (round 2, finding 2).
            raise ValueError(f"request id {request} used again before its answer")
        if len(self._asked) >= MAX_PENDING:
            raise ValueError(f"more than {MAX_PENDING} requests waiting for an answer")
        self._asked.add(request)
        if kind == FXP["OPEN"]:
            path = _text(packet.string())
            flags = packet.uint32()
            self._opening[request] = _Open(path, bool(flags & FXF_CHANGES))
        elif kind == FXP["OPENDIR"]:
            self._opendirs.add(request)
        elif kind == FXP["READ"]:
            self._reads[request] = self._given(packet.string())
        elif kind == FXP["WRITE"]:
            handle = self._given(packet.string())
            packet.uint64()
            opened = self._handles.get(handle)
            if opened is not None:
                opened.written += len(packet.string())
        elif kind == FXP["CLOSE"]:
            handle = self._given(packet.string())
            self._dir_handles.discard(handle)
            opened = self._handles.pop(handle, None)
            if opened is not None:
                self._report_file(opened, "I")
        elif kind == FXP["FSETSTAT"]:
            handle = self._given(packet.string())
            self._pending[request] = {"action": "fsetstat", "path": self._path_of(handle)}
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

    def _given(self, handle: bytes) -> bytes:
        """``handle``, if sftp-server gave it and it is open: a handle used before its
        HANDLE reply was guessed, and what goes through it could not be named."""
        if handle not in self._handles and handle not in self._dir_handles:
            raise ValueError(f"handle {_text(handle)[:40]!r} used but not open")
        return handle

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
        self._asked.discard(request)
        if kind == FXP["HANDLE"]:
            handle = packet.string()
            if handle in self._handles or handle in self._dir_handles:
                raise ValueError(f"handle {_text(handle)[:40]!r} given while still open")
            opened = self._opening.pop(request, None)
            if opened is not None:
                self._handles[handle] = opened
            elif request in self._opendirs:
                self._dir_handles.add(handle)
            self._opendirs.discard(request)
        elif kind == FXP["DATA"]:
            reading = self._reads.pop(request, None)
            opened = self._handles.get(reading) if reading is not None else None
            if opened is not None:
                opened.read += len(packet.string())
        elif kind == FXP["STATUS"]:
            self._reads.pop(request, None)
            self._opendirs.discard(request)
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


SCP_LINE = 2047
"""The most bytes OpenSSH's scp reads as one control line or one answer (a 2048-byte buffer
with its NUL, ``sink()`` and ``response()`` in scp.c): more, with no newline, and the rest is
read as the next line. The watcher follows only lines shorter than this."""
MAX_NODE_ANSWER = 16 * 1024
"""The longest error line the node's scp may answer with (``\\1scp: PATH: reason``)."""
_HEADER = re.compile(rb"([CD])([0-7]{4}) ([0-9]+) (.*)", re.DOTALL)
"""A file (``C``) or directory (``D``) header as scp's sink parses it: four octal digits of
mode, a decimal length, one space, a name."""
_TIMES = re.compile(rb"T[0-9]+ [0-9]{1,6} [0-9]+ [0-9]{1,6}")


@dataclass
class ScpWatch:
    """Follows a legacy ``scp -t`` (upload to the node) or ``scp -f`` (download) stream.

    The protocol runs in lock-step: the side that sends files (the user's on upload, the
    node's scp on download) sends one record (``C<mode> <length> <name>`` then the file's
    bytes and a status, ``D``/``E`` around directories, ``T`` times) and waits for the
    receiver's answer (``\\0``, or ``\\1`` and an error line) before the next; a ``\\1`` line
    from the sender is an error message, not a record. The watcher reads both sides and frames
    every line and answer exactly as OpenSSH's scp does (``sink()``, ``response()``): a
    refused file has no bytes, a status that is not ``\\0`` carries a line. Whatever scp would
    take differently, or anything it does not expect (a record before the answer, an answer
    nothing asked for, a line at scp's length limit, an unknown control byte), stops the
    transfer (issue 14, round 2: ``\\1``-prefixed and over-long lines hid files).
    """

    report: Report
    upload: bool
    target: str
    target_is_dir: bool
    stop: Stop = _nothing
    recursive: bool = True  # -r: scp takes directories (a D without it ends scp)
    broken: bool = False
    _line: bytearray = field(default_factory=bytearray)  # the sender's line being read
    _answer: bytearray = field(default_factory=bytearray)  # the receiver's answer being read
    _waiting: str | None = "start"  # the record awaiting the receiver's answer
    _dirs: list[str] = field(default_factory=list)
    _dir: str = ""  # the directory a D record names, until it is answered
    _remaining: int = -1  # bytes of the current file still to pass; 0: its status is next
    _file: dict[str, Any] = field(default_factory=dict)
    _ended: bool = False  # scp has returned or exited: nothing after this is read

    @classmethod
    def for_argv(
        cls, argv: list[str], report: Report, home: str, stop: Stop = _nothing
    ) -> "ScpWatch":
        """A watcher of the transfer ``argv`` (from ``scp_server_argv``) runs; ``stop`` ends
        its channel."""
        flags = [word for word in argv[1:-1] if word != "--"]
        upload = any("t" in word for word in flags)
        recursive = any("r" in word for word in flags)
        target = argv[-1]
        full = target if target.startswith("/") else posixpath.join(home, target)
        return cls(report, upload, target, os.path.isdir(full), stop, recursive)

    def from_user(self, data: bytes) -> None:
        self._guard(self._from_sender if self.upload else self._from_receiver, data)

    def from_node(self, data: bytes) -> None:
        self._guard(self._from_receiver if self.upload else self._from_sender, data)

    def _guard(self, feed: Callable[[memoryview], None], data: bytes) -> None:
        if self.broken:
            return
        try:
            feed(memoryview(data))
        except ValueError as exc:
            _unfollowed(self, "scp", exc)

    def finish(self) -> None:
        """The session ended: a file cut short is reported with the bytes that reached it."""
        if self._file:
            if self._remaining >= 0:
                moved = self._file["length"] - self._remaining
            else:  # all its bytes (waiting for the answer), or none (waiting to be let in)
                moved = self._file["length"] if self._waiting == "done" else 0
            fields = {**self._file, "length": moved, "error": "cut short"}
            fields.pop("status", None)
            self._file = {}
            self.report("W", fields)

    def _from_sender(self, view: memoryview) -> None:
        while view and not self.broken:
            if self._remaining > 0:  # the file's bytes
                taken = min(self._remaining, len(view))
                self._remaining -= taken
                view = view[taken:]
            elif self._remaining == 0:  # the status after them: \0, or a byte and a line
                view, status = self._read_answer(view, SCP_LINE)
                if status is not None:
                    self._status(status)
            elif self._ended:
                raise ValueError("data after the end of the transfer")
            elif self._waiting is not None:
                raise ValueError(f"sent before the receiver answered ({self._waiting})")
            else:
                view, line = self._read_line(view)
                if line is not None:
                    self._record(line)

    def _from_receiver(self, view: memoryview) -> None:
        limit = MAX_NODE_ANSWER if self.upload else SCP_LINE
        while view and not self.broken:
            if self._waiting is None:
                raise ValueError("an answer to nothing")
            view, answer = self._read_answer(view, limit)
            if answer is not None:
                self._answered(answer)

    def _read_line(self, view: memoryview) -> tuple[memoryview, bytes | None]:
        """The sender's next line (without its newline), or None until it is whole."""
        room = SCP_LINE - 1 - len(self._line)  # bytes before the newline, short of the limit
        newline = bytes(view[:room]).find(b"\n")
        if newline < 0:
            if len(view) >= room:
                raise ValueError(f"control line at scp's limit ({SCP_LINE} bytes)")
            self._line += view
            return view[len(view) :], None
        self._line += view[:newline]
        line = bytes(self._line)
        self._line.clear()
        return view[newline + 1 :], line

    def _read_answer(self, view: memoryview, limit: int) -> tuple[memoryview, bytes | None]:
        """The next answer as scp's ``response()`` reads it: ``\\0`` alone, or any other byte
        and a line; None until it is whole."""
        if not self._answer and view[0] == 0:
            return view[1:], b"\0"
        # The answer's first byte is never its end, even a newline: scp reads on to the next.
        newline = bytes(view).find(b"\n", 0 if self._answer else 1)
        end = len(view) if newline < 0 else newline + 1
        self._answer += view[:end]
        if len(self._answer) >= limit:
            raise ValueError(f"answer line at scp's limit ({limit} bytes)")
        if newline < 0:
            return view[end:], None
        answer = bytes(self._answer)
        self._answer.clear()
        return view[end:], answer

    def _status(self, status: bytes) -> None:
        """The sender's status after a file's bytes: ``\\0``, ``\\1`` and a message (the
        receiver answers), or any other byte and a line (the receiver exits on it)."""
        self._remaining = -1
        if status[:1] != b"\0":
            self._file["status"] = _text(status[1:].rstrip(b"\n"))
        if status[:1] in (b"\0", b"\1"):
            self._waiting = "done"
            return
        fields, self._file = self._file, {}
        error = fields.pop("status")
        self.report("W", {**fields, "error": error})
        self._end()

    def _end(self) -> None:
        """scp returns from its last level or exits: it reads nothing after this."""
        self._ended = True

    def _path(self, name: str) -> str:
        """Where a file lands (upload) or comes from (download), as scp itself resolves it."""
        if not self._dirs:
            return posixpath.join(self.target, name) if self.target_is_dir else self.target
        # The first D names the copied directory: inside an existing target directory on
        # upload; the requested path itself on download.
        inner = self._dirs if (self.upload and self.target_is_dir) else self._dirs[1:]
        return posixpath.join(self.target, *inner, name)

    def _record(self, line: bytes) -> None:
        """One of the sender's lines, as scp's sink takes it."""
        if line[:1] in (b"\1", b"\2"):  # an error message: printed, not a record
            if line[:1] == b"\2":
                self._end()  # a fatal one: scp exits
            return
        text = line.split(b"\0", 1)[0]  # scp parses the line as a C string
        if text[:1] == b"E":
            self._waiting = "end"
            return
        if text[:1] == b"T":
            if not _TIMES.fullmatch(text):
                raise ValueError(f"times line {text[:40]!r} is not one scp takes")
            self._waiting = "times"
            return
        header = _HEADER.fullmatch(text)
        if header is None:
            raise ValueError(f"control line {text[:40]!r} is not one scp takes")
        kind, _, length, raw = header.groups()
        if not raw or b"/" in raw or raw in (b".", b".."):
            raise ValueError(f"file name {raw[:40]!r} is not one scp takes")
        name = _text(raw)
        if kind == b"D":
            if not self.recursive:
                raise ValueError("a directory without -r")
            self._dir, self._waiting = name, "dir"
            return
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
        self._waiting = "file"

    def _answered(self, answer: bytes) -> None:
        """The receiver's answer to the record waiting for one."""
        waiting, self._waiting = self._waiting, None
        ok = answer == b"\0"
        error = "" if ok else _text(answer[1:].rstrip(b"\n"))
        if answer[:1] not in (b"\0", b"\1"):
            self._end()  # scp exits on any answer but these two
        if waiting == "file":
            if ok:
                self._remaining = self._file["length"]
            else:  # refused: no bytes follow, the next line is a record again
                fields, self._file = {**self._file, "length": 0, "error": error}, {}
                self.report("W", fields)
        elif waiting == "done":
            fields, self._file = self._file, {}
            status = fields.pop("status", None)
            if ok and status is None:
                self.report("I", fields)
            else:
                self.report("W", {**fields, "error": error or str(status)})
        elif waiting == "dir":
            if ok:
                self._dirs.append(self._dir)
            else:
                path = self._path(self._dir)
                self.report("W", {"action": "directory", "path": path, "error": error})
        elif waiting == "end":
            if self._dirs:
                self._dirs.pop()
            else:
                self._end()

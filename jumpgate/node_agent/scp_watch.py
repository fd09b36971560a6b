"""Legacy SCP transfers seen on the node, for the audit log (see ``transfers``): which
commands are transfers at all, and the watcher of an ``scp -t``/``scp -f`` stream."""

import os
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jumpgate.node_agent.transfers import Report, Stop, audit_name, nothing, unfollowed

SCP_SERVER_FLAGS = frozenset("dfprtv")
"""What OpenSSH's scp client puts on the command line of the remote end (with ``--``)."""
_PLAIN = frozenset(" -_./,:@%+='\"")
"""Characters a transfer's command may hold besides letters and digits: none means anything
to a shell beyond quoting, so splitting it as the shell would is the whole of its meaning."""
MAX_SCP_LENGTH = 2**63 - 1
"""The largest file an scp C-line may announce: OpenSSH's scp refuses more (``off_t``)."""


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
    stop: Stop = nothing
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
        cls, argv: list[str], report: Report, home: str, stop: Stop = nothing
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
            unfollowed(self, "scp", exc)

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
            self._file["status"] = audit_name(status[1:].rstrip(b"\n"))
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
        name = audit_name(raw)
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
        error = "" if ok else audit_name(answer[1:].rstrip(b"\n"))
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

"""SFTP sessions seen on the node, for the audit log (see ``transfers``): the requests from
the user and the replies from the node's SFTP server (``sftp_server``, which answers as
OpenSSH's ``sftp-server`` does), read as they pass."""

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jumpgate.node_agent.transfers import Report, Stop, audit_name, nothing, unfollowed

MAX_PACKET = 512 * 1024
MAX_PENDING = 64 * 1024
"""Requests one SFTP session may have waiting for an answer (OpenSSH's sftp keeps 64)."""
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
    stop: Stop = nothing
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
            unfollowed(self, "sftp", exc)

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
        return opened.path if opened is not None else f"handle {audit_name(handle)}"

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
            path = audit_name(packet.string())
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
                "path": audit_name(packet.string()),
            }
            if kind in (FXP["RENAME"], FXP["SYMLINK"]):
                fields["target"] = audit_name(packet.string())
            self._pending[request] = fields
        elif kind == FXP["EXTENDED"]:
            self._extended(request, packet)

    def _given(self, handle: bytes) -> bytes:
        """``handle``, if sftp-server gave it and it is open: a handle used before its
        HANDLE reply was guessed, and what goes through it could not be named."""
        if handle not in self._handles and handle not in self._dir_handles:
            raise ValueError(f"handle {audit_name(handle)[:40]!r} used but not open")
        return handle

    def _extended(self, request: int, packet: _Reader) -> None:
        """OpenSSH's extensions: renames, links and copies change files as the core does."""
        name = packet.string()
        fields: dict[str, Any]
        if name in _EXTENDED_QUERIES:
            return
        if name in _EXTENDED_TWO_PATHS:
            path = audit_name(packet.string())
            target = audit_name(packet.string())
            fields = {"action": _EXTENDED_TWO_PATHS[name], "path": path, "target": target}
        elif name in _EXTENDED_ONE_PATH:
            fields = {"action": _EXTENDED_ONE_PATH[name], "path": audit_name(packet.string())}
        elif name == b"copy-data":
            source = self._path_of(packet.string())
            packet.uint64()
            packet.uint64()
            fields = {"action": "copy-data", "path": self._path_of(packet.string())}
            fields["source"] = source
        else:
            fields = {"action": "extended", "name": audit_name(name)}
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
                raise ValueError(f"handle {audit_name(handle)[:40]!r} given while still open")
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
                error = audit_name(packet.string())
                self.report("W", {"action": "open", "path": failed_open.path, "error": error})
            fields = self._pending.pop(request, None)
            if fields is not None:
                if status != 0:
                    fields["error"] = audit_name(packet.string())
                self.report("I" if status == 0 else "W", fields)

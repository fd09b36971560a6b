"""The node's own SFTP server: SFTP version 3 on a byte stream, as OpenSSH's ``sftp-server``.

It runs in a child process that has already become the login (``sftp_child``), so every file
operation is the login's system call and the kernel holds it to that user's permissions; a
refused one is answered with its SFTP status (``Permission denied``, ``No such file``...),
never by ending the session. Like ``sftp-server`` it answers requests one at a time, in the
order they came, each exactly once (the agent's ``SftpWatch`` follows the stream by that), and
sends nothing for a request type it does not know. Besides the core protocol it serves the
OpenSSH extensions clients use: posix-rename, statvfs, fstatvfs, hardlink, fsync, lsetstat,
limits, expand-path and home-directory.
"""

import os
import pwd
import stat
import struct
from collections.abc import Callable

from jumpgate.node_agent import sftp_codec as wire
from jumpgate.node_agent.sftp_codec import FX_FAILURE, FX_OK, Attrs, BadMessage, Reader, Status

MAX_HANDLES = 512
"""Files and directories one session may hold open at once (OpenSSH's is about as many)."""
READDIR_BATCH = 100
"""Names per READDIR answer, as OpenSSH sends them."""
EXTENSIONS = (
    (b"posix-rename@openssh.com", b"1"),
    (b"statvfs@openssh.com", b"2"),
    (b"fstatvfs@openssh.com", b"2"),
    (b"hardlink@openssh.com", b"1"),
    (b"fsync@openssh.com", b"1"),
    (b"lsetstat@openssh.com", b"1"),
    (b"limits@openssh.com", b"1"),
    (b"expand-path@openssh.com", b"1"),
    (b"home-directory", b"1"),
)
_OPEN_FLAGS = (
    (wire.FXF_APPEND, os.O_APPEND),
    (wire.FXF_CREAT, os.O_CREAT),
    (wire.FXF_TRUNC, os.O_TRUNC),
    (wire.FXF_EXCL, os.O_EXCL),
)

Handler = Callable[["Server", int, Reader], bytes]


class _Listing:
    """An open directory: its path and the names not yet sent (last first)."""

    def __init__(self, path: bytes, names: list[bytes]) -> None:
        self.path = path
        self.names = names[::-1]


class Server:
    """One SFTP session's state: ``answer`` takes a request packet, gives the reply packet."""

    def __init__(self, *, standard_symlink: bool = False) -> None:
        # OpenSSH's client (and most others) send SYMLINK's two paths in reverse order, and
        # OpenSSH's server reads them so; asyncssh's client sends the standard order to a
        # server that is not OpenSSH's. ``sftp_child`` tells which this client is.
        self.standard_symlink = standard_symlink
        self.started = False
        self._files: dict[bytes, int] = {}
        self._dirs: dict[bytes, _Listing] = {}
        self._next = 0

    def answer(self, request: bytes) -> bytes | None:
        """The reply to one request (its packet, length and all); None: no reply."""
        packet = Reader(request)
        kind = packet.byte()
        if kind == wire.FXP_INIT:
            self.started = True
            extensions = b"".join(wire.string(n) + wire.string(v) for n, v in EXTENSIONS)
            return wire.packet(wire.FXP_VERSION, wire.uint32(wire.VERSION), extensions)
        if not self.started:
            raise BadMessage("request before init")
        handler = _HANDLERS.get(kind)
        if handler is None:
            return None  # as sftp-server: an unknown type is logged there, never answered
        request_id = packet.uint32()
        try:
            return handler(self, request_id, packet)
        except BadMessage as exc:
            return _status(request_id, wire.FX_BAD_MESSAGE, str(exc))
        except Status as exc:
            return _status(request_id, exc.code, str(exc))
        except OSError as exc:
            return _status(request_id, wire.status_of(exc), exc.strerror or "")
        except (NotImplementedError, OverflowError, ValueError) as exc:
            return _status(request_id, wire.FX_OP_UNSUPPORTED, str(exc))

    def close_all(self) -> None:
        """The session ended: close what it left open."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        self._dirs.clear()

    # -- handles ---------------------------------------------------------------------------

    def _handle(self) -> bytes:
        if len(self._files) + len(self._dirs) >= MAX_HANDLES:
            raise Status(FX_FAILURE, f"too many open files (at most {MAX_HANDLES})")
        while True:
            handle = struct.pack(">I", self._next)
            self._next = (self._next + 1) & 0xFFFFFFFF
            if handle not in self._files and handle not in self._dirs:
                return handle

    def _fd(self, packet: Reader) -> int:
        fd = self._files.get(packet.string())
        if fd is None:
            raise Status(FX_FAILURE, "no such open file")
        return fd

    # -- files -----------------------------------------------------------------------------

    def open(self, request_id: int, packet: Reader) -> bytes:
        path, pflags, attrs = packet.string(), packet.uint32(), packet.attrs()
        access = pflags & (wire.FXF_READ | wire.FXF_WRITE)
        flags = {
            wire.FXF_READ: os.O_RDONLY,
            wire.FXF_WRITE: os.O_WRONLY,
            wire.FXF_READ | wire.FXF_WRITE: os.O_RDWR,
        }.get(access, os.O_RDONLY)
        for flag, os_flag in _OPEN_FLAGS:
            if pflags & flag:
                flags |= os_flag
        mode = attrs.permissions & 0o7777 if attrs.permissions is not None else 0o666
        handle = self._handle()
        self._files[handle] = os.open(_path(path), flags | os.O_NOCTTY, mode)
        return wire.packet(wire.FXP_HANDLE, wire.uint32(request_id), wire.string(handle))

    def close(self, request_id: int, packet: Reader) -> bytes:
        handle = packet.string()
        if self._dirs.pop(handle, None) is not None:
            return _status(request_id, FX_OK)
        fd = self._files.pop(handle, None)
        if fd is None:
            raise Status(FX_FAILURE, "no such open file")
        os.close(fd)
        return _status(request_id, FX_OK)

    def read(self, request_id: int, packet: Reader) -> bytes:
        fd, offset, length = self._fd(packet), packet.uint64(), packet.uint32()
        data = os.pread(fd, min(length, wire.MAX_READ), offset)
        if not data:
            return _status(request_id, wire.FX_EOF)
        return wire.packet(wire.FXP_DATA, wire.uint32(request_id), wire.string(data))

    def write(self, request_id: int, packet: Reader) -> bytes:
        fd, offset, data = self._fd(packet), packet.uint64(), memoryview(packet.string())
        while data:
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
        return _status(request_id, FX_OK)

    def fstat(self, request_id: int, packet: Reader) -> bytes:
        return _attrs(request_id, os.fstat(self._fd(packet)))

    def fsetstat(self, request_id: int, packet: Reader) -> bytes:
        fd = self._fd(packet)
        _apply(packet.attrs(), fd, follow=True)
        return _status(request_id, FX_OK)

    # -- paths -----------------------------------------------------------------------------

    def stat(self, request_id: int, packet: Reader) -> bytes:
        return _attrs(request_id, os.stat(_path(packet.string())))

    def lstat(self, request_id: int, packet: Reader) -> bytes:
        return _attrs(request_id, os.lstat(_path(packet.string())))

    def setstat(self, request_id: int, packet: Reader) -> bytes:
        path = _path(packet.string())
        _apply(packet.attrs(), path, follow=True)
        return _status(request_id, FX_OK)

    def opendir(self, request_id: int, packet: Reader) -> bytes:
        path = _path(packet.string())
        names = [b".", b"..", *os.listdir(path)]
        handle = self._handle()
        self._dirs[handle] = _Listing(path, names)
        return wire.packet(wire.FXP_HANDLE, wire.uint32(request_id), wire.string(handle))

    def readdir(self, request_id: int, packet: Reader) -> bytes:
        listing = self._dirs.get(packet.string())
        if listing is None:
            raise Status(FX_FAILURE, "no such open directory")
        entries: list[bytes] = []
        while listing.names and len(entries) < READDIR_BATCH:
            name = listing.names.pop()
            try:
                found = os.lstat(os.path.join(listing.path, name))
            except OSError:
                continue  # gone since it was listed
            long = wire.long_name(os.fsdecode(name), found)
            entries.append(wire.name_entry(name, long, Attrs.of(found)))
        if not entries:
            return _status(request_id, wire.FX_EOF)
        return _names(request_id, entries)

    def remove(self, request_id: int, packet: Reader) -> bytes:
        os.unlink(_path(packet.string()))
        return _status(request_id, FX_OK)

    def mkdir(self, request_id: int, packet: Reader) -> bytes:
        path, attrs = _path(packet.string()), packet.attrs()
        os.mkdir(path, attrs.permissions & 0o7777 if attrs.permissions is not None else 0o777)
        return _status(request_id, FX_OK)

    def rmdir(self, request_id: int, packet: Reader) -> bytes:
        os.rmdir(_path(packet.string()))
        return _status(request_id, FX_OK)

    def realpath(self, request_id: int, packet: Reader) -> bytes:
        return _one_name(request_id, os.path.realpath(_path(packet.string())))

    def rename(self, request_id: int, packet: Reader) -> bytes:
        """SFTP v3 rename never replaces the target (posix-rename does): a regular file is
        linked then unlinked, which fails on an existing target without a race (as OpenSSH)."""
        old, new = _path(packet.string()), _path(packet.string())
        if stat.S_ISREG(os.lstat(old).st_mode):
            try:
                os.link(old, new)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
            else:
                try:
                    os.unlink(old)
                except OSError:
                    os.unlink(new)
                    raise
                return _status(request_id, FX_OK)
        if os.path.lexists(new):
            raise Status(FX_FAILURE)
        os.rename(old, new)
        return _status(request_id, FX_OK)

    def readlink(self, request_id: int, packet: Reader) -> bytes:
        return _one_name(request_id, os.readlink(_path(packet.string())))

    def symlink(self, request_id: int, packet: Reader) -> bytes:
        first, second = packet.string(), packet.string()
        link, target = (first, second) if self.standard_symlink else (second, first)
        os.symlink(target, _path(link))
        return _status(request_id, FX_OK)

    # -- OpenSSH's extensions --------------------------------------------------------------

    def extended(self, request_id: int, packet: Reader) -> bytes:
        name = packet.string()
        handler = _EXTENDED.get(name)
        if handler is None:
            raise Status(wire.FX_OP_UNSUPPORTED, f"{name.decode(errors='replace')} not served")
        return handler(self, request_id, packet)

    def posix_rename(self, request_id: int, packet: Reader) -> bytes:
        old, new = _path(packet.string()), _path(packet.string())
        os.rename(old, new)
        return _status(request_id, FX_OK)

    def statvfs(self, request_id: int, packet: Reader) -> bytes:
        return _reply(request_id, wire.statvfs_reply(os.statvfs(_path(packet.string()))))

    def fstatvfs(self, request_id: int, packet: Reader) -> bytes:
        return _reply(request_id, wire.statvfs_reply(os.fstatvfs(self._fd(packet))))

    def hardlink(self, request_id: int, packet: Reader) -> bytes:
        old, new = _path(packet.string()), _path(packet.string())
        os.link(old, new)
        return _status(request_id, FX_OK)

    def fsync(self, request_id: int, packet: Reader) -> bytes:
        os.fsync(self._fd(packet))
        return _status(request_id, FX_OK)

    def lsetstat(self, request_id: int, packet: Reader) -> bytes:
        path, attrs = _path(packet.string()), packet.attrs()
        if attrs.size is not None:
            raise BadMessage("a link has no size to set")
        # Linux cannot chmod a link itself; what is not a link is set as setstat sets it.
        _apply(attrs, path, follow=not os.path.islink(path))
        return _status(request_id, FX_OK)

    def limits(self, request_id: int, _packet: Reader) -> bytes:
        sizes = (wire.MAX_PACKET, wire.MAX_READ, wire.MAX_READ, MAX_HANDLES)
        return _reply(request_id, b"".join(wire.uint64(size) for size in sizes))

    def expand_path(self, request_id: int, packet: Reader) -> bytes:
        path = _path(packet.string())
        if path.startswith(b"~"):
            expanded = os.path.expanduser(path)
            if expanded.startswith(b"~"):
                raise Status(wire.FX_NO_SUCH_FILE, "no such user")
            path = expanded
        return _one_name(request_id, os.path.realpath(path))

    def home_directory(self, request_id: int, packet: Reader) -> bytes:
        user = packet.string()
        try:
            entry = pwd.getpwnam(os.fsdecode(user)) if user else pwd.getpwuid(os.getuid())
        except KeyError:
            raise Status(FX_FAILURE, "no such user") from None
        return _one_name(request_id, os.fsencode(entry.pw_dir))


_NO_LINKS = frozenset({95, 38, 18, 1})
"""link(2) errors (EOPNOTSUPP, ENOSYS, EXDEV, EPERM) on which a rename falls back to rename(2)
on a target that does not exist, as OpenSSH's does."""


def _path(raw: bytes) -> bytes:
    """A request's path: empty means the current directory (the login's home), as OpenSSH."""
    if b"\0" in raw:
        raise BadMessage("a path holds a NUL byte")
    return raw or b"."


def _apply(attrs: Attrs, target: bytes | int, *, follow: bool) -> None:
    """Set what ``attrs`` give, in OpenSSH's order: size, mode, times, owner."""
    if attrs.size is not None:
        os.truncate(target, attrs.size)
    if attrs.permissions is not None:
        os.chmod(target, attrs.permissions & 0o7777, follow_symlinks=follow)
    if attrs.atime is not None and attrs.mtime is not None:
        os.utime(target, (attrs.atime, attrs.mtime), follow_symlinks=follow)
    if attrs.uid is not None and attrs.gid is not None:
        os.chown(target, attrs.uid, attrs.gid, follow_symlinks=follow)


def _status(request_id: int, code: int, message: str = "") -> bytes:
    text = message or wire.MESSAGES.get(code, "Failure")
    return wire.packet(
        wire.FXP_STATUS, wire.uint32(request_id), wire.uint32(code), wire.string(text), b"\0\0\0\0"
    )


def _attrs(request_id: int, found: os.stat_result) -> bytes:
    return wire.packet(wire.FXP_ATTRS, wire.uint32(request_id), Attrs.of(found).encode())


def _names(request_id: int, entries: list[bytes]) -> bytes:
    return wire.packet(wire.FXP_NAME, wire.uint32(request_id), wire.uint32(len(entries)), *entries)


def _one_name(request_id: int, path: bytes) -> bytes:
    return _names(request_id, [wire.name_entry(path, os.fsdecode(path), Attrs())])


def _reply(request_id: int, body: bytes) -> bytes:
    return wire.packet(wire.FXP_EXTENDED_REPLY, wire.uint32(request_id), body)


_HANDLERS: dict[int, Handler] = {
    3: Server.open,
    4: Server.close,
    5: Server.read,
    6: Server.write,
    7: Server.lstat,
    8: Server.fstat,
    9: Server.setstat,
    10: Server.fsetstat,
    11: Server.opendir,
    12: Server.readdir,
    13: Server.remove,
    14: Server.mkdir,
    15: Server.rmdir,
    16: Server.realpath,
    17: Server.stat,
    18: Server.rename,
    19: Server.readlink,
    20: Server.symlink,
    wire.FXP_EXTENDED: Server.extended,
}
_EXTENDED: dict[bytes, Handler] = {
    b"posix-rename@openssh.com": Server.posix_rename,
    b"statvfs@openssh.com": Server.statvfs,
    b"fstatvfs@openssh.com": Server.fstatvfs,
    b"hardlink@openssh.com": Server.hardlink,
    b"fsync@openssh.com": Server.fsync,
    b"lsetstat@openssh.com": Server.lsetstat,
    b"limits@openssh.com": Server.limits,
    b"expand-path@openssh.com": Server.expand_path,
    b"home-directory": Server.home_directory,
}

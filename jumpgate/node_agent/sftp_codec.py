"""The SFTP version 3 wire format the node's own SFTP server speaks (``sftp_server``):
packets, file attributes, status codes and the ``ls -l`` lines clients show.

As draft-ietf-secsh-filexfer-02 and OpenSSH's ``sftp-server`` have it; standard library only,
because the server is a small child process started for every SFTP session.
"""

import errno
import grp
import os
import pwd
import stat
import struct
import time
from dataclasses import dataclass

VERSION = 3
MAX_PACKET = 256 * 1024
"""The longest request read (OpenSSH's SFTP_MAX_MSG_LENGTH); a longer one ends the session."""
MAX_READ = MAX_PACKET - 1024
"""The most data one READ answers, leaving room for the packet around it (as OpenSSH)."""

FXP_INIT, FXP_VERSION = 1, 2
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 101, 102, 103, 104, 105
FXP_EXTENDED, FXP_EXTENDED_REPLY = 200, 201

FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_BAD_MESSAGE, FX_OP_UNSUPPORTED = 5, 8
MESSAGES = {
    FX_OK: "Success",
    FX_EOF: "End of file",
    FX_NO_SUCH_FILE: "No such file",
    FX_PERMISSION_DENIED: "Permission denied",
    FX_FAILURE: "Failure",
    FX_BAD_MESSAGE: "Bad message",
    FX_OP_UNSUPPORTED: "Operation unsupported",
}
"""What OpenSSH's sftp-server says with each status; clients show it."""

ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000

FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 0x10, 0x20

_STATUS_OF_ERRNO = {
    errno.ENOENT: FX_NO_SUCH_FILE,
    errno.ENOTDIR: FX_NO_SUCH_FILE,
    errno.EBADF: FX_NO_SUCH_FILE,
    errno.ELOOP: FX_NO_SUCH_FILE,
    errno.EPERM: FX_PERMISSION_DENIED,
    errno.EACCES: FX_PERMISSION_DENIED,
    errno.EFAULT: FX_PERMISSION_DENIED,
    errno.ENAMETOOLONG: FX_BAD_MESSAGE,
    errno.EINVAL: FX_BAD_MESSAGE,
    errno.ENOSYS: FX_OP_UNSUPPORTED,
}


class BadMessage(ValueError):
    """A request too short for what its type carries."""


class Status(Exception):
    """A request that fails: answered with this status code (and its message)."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or MESSAGES.get(code, "Failure"))
        self.code = code


def status_of(exc: OSError) -> int:
    """The SFTP status of a failed system call, as OpenSSH's errno_to_portable maps it."""
    return _STATUS_OF_ERRNO.get(exc.errno or 0, FX_FAILURE)


class Reader:
    """The fields of one packet, read in order; ``BadMessage`` past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def _take(self, length: int) -> bytes:
        if self.at + length > len(self.data):
            raise BadMessage("packet too short")
        value = self.data[self.at : self.at + length]
        self.at += length
        return value

    def byte(self) -> int:
        return self._take(1)[0]

    def uint32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def uint64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def string(self) -> bytes:
        return self._take(self.uint32())

    def attrs(self) -> "Attrs":
        flags = self.uint32()
        found = Attrs()
        if flags & ATTR_SIZE:
            found.size = self.uint64()
        if flags & ATTR_UIDGID:
            found.uid, found.gid = self.uint32(), self.uint32()
        if flags & ATTR_PERMISSIONS:
            found.permissions = self.uint32()
        if flags & ATTR_ACMODTIME:
            found.atime, found.mtime = self.uint32(), self.uint32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.uint32()):
                self.string()
                self.string()
        return found


def uint32(value: int) -> bytes:
    return struct.pack(">I", value & 0xFFFFFFFF)


def uint64(value: int) -> bytes:
    return struct.pack(">Q", value & 0xFFFFFFFFFFFFFFFF)


def string(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return uint32(len(raw)) + raw


def packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return uint32(len(body)) + body


@dataclass
class Attrs:
    """File attributes as SFTP v3 carries them; None: not given."""

    size: int | None = None
    uid: int | None = None
    gid: int | None = None
    permissions: int | None = None
    atime: int | None = None
    mtime: int | None = None

    @classmethod
    def of(cls, found: os.stat_result) -> "Attrs":
        return cls(
            found.st_size,
            found.st_uid,
            found.st_gid,
            found.st_mode,
            int(found.st_atime),
            int(found.st_mtime),
        )

    def encode(self) -> bytes:
        flags, fields = 0, b""
        if self.size is not None:
            flags, fields = flags | ATTR_SIZE, fields + uint64(self.size)
        if self.uid is not None and self.gid is not None:
            flags, fields = flags | ATTR_UIDGID, fields + uint32(self.uid) + uint32(self.gid)
        if self.permissions is not None:
            flags, fields = flags | ATTR_PERMISSIONS, fields + uint32(self.permissions)
        if self.atime is not None and self.mtime is not None:
            flags, fields = flags | ATTR_ACMODTIME, fields + uint32(self.atime) + uint32(self.mtime)
        return uint32(flags) + fields


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def long_name(name: str, found: os.stat_result) -> str:
    """The ``ls -l`` line a directory listing carries for ``name`` (OpenSSH's ``ls -l``
    prints it as it is)."""
    recent = abs(time.time() - found.st_mtime) < 182 * 24 * 3600
    when = time.strftime("%b %d %H:%M" if recent else "%b %d  %Y", time.localtime(found.st_mtime))
    return (
        f"{stat.filemode(found.st_mode)} {found.st_nlink:>3} {_owner(found.st_uid):<8} "
        f"{_group(found.st_gid):<8} {found.st_size:>8} {when} {name}"
    )


def name_entry(name: bytes, long: str, attrs: Attrs) -> bytes:
    return string(name) + string(long) + attrs.encode()


def statvfs_reply(found: os.statvfs_result) -> bytes:
    """The body of a ``statvfs@openssh.com`` answer."""
    fields = (
        found.f_bsize,
        found.f_frsize,
        found.f_blocks,
        found.f_bfree,
        found.f_bavail,
        found.f_files,
        found.f_ffree,
        found.f_favail,
        found.f_fsid,
        found.f_flag & (os.ST_RDONLY | os.ST_NOSUID),
        found.f_namemax,
    )
    return b"".join(uint64(value) for value in fields)

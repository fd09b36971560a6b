"""The node's SFTP wire format and how its child is started (no sockets, no processes)."""

import errno
import os
import sys

import pytest

import jumpgate
from jumpgate.node_agent import sftp_child
from jumpgate.node_agent import sftp_codec as wire
from jumpgate.node_agent.server import SERVER_VERSION
from jumpgate.node_agent.sessions import Account

STATUSES = [
    (errno.ENOENT, wire.FX_NO_SUCH_FILE),
    (errno.ENOTDIR, wire.FX_NO_SUCH_FILE),
    (errno.EACCES, wire.FX_PERMISSION_DENIED),
    (errno.EPERM, wire.FX_PERMISSION_DENIED),
    (errno.EINVAL, wire.FX_BAD_MESSAGE),
    (errno.ENOSYS, wire.FX_OP_UNSUPPORTED),
    (errno.EEXIST, wire.FX_FAILURE),
    (errno.ENOTEMPTY, wire.FX_FAILURE),
]


@pytest.mark.parametrize(
    ("number", "status"), STATUSES, ids=[errno.errorcode[n] for n, _ in STATUSES]
)
def test_a_failed_call_is_the_status_openssh_gives(number: int, status: int) -> None:
    assert wire.status_of(OSError(number, os.strerror(number))) == status


def test_attributes_read_back_as_written() -> None:
    found = os.stat(__file__)
    encoded = wire.Attrs.of(found).encode()
    decoded = wire.Reader(encoded).attrs()
    assert decoded == wire.Attrs.of(found)
    assert wire.Reader(wire.uint32(0)).attrs() == wire.Attrs()


def test_a_short_packet_is_a_bad_message() -> None:
    packet = wire.Reader(wire.uint32(10) + b"abc")
    with pytest.raises(wire.BadMessage):
        packet.string()


def test_a_listing_line_is_ls_l() -> None:
    line = wire.long_name("name", os.stat(__file__))
    assert line.startswith("-rw")
    assert line.endswith(" name")


ROOT_LOGIN = Account("root", 0, 0, "/root", "/bin/sh")
PLAIN_LOGIN = Account("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin")


def test_the_child_is_the_agents_interpreter_and_code_isolated() -> None:
    argv = sftp_child.argv(ROOT_LOGIN)
    assert argv[:2] == [sys.executable, "-I"]
    assert argv[4] == os.path.dirname(os.path.dirname(jumpgate.__file__))
    assert "--uid" not in argv  # root stays root, as a command of root's does
    assert argv[-2:] == ["--home", "/root"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only an agent running as root switches users")
def test_a_plain_login_is_switched_to_with_its_groups() -> None:
    argv = sftp_child.argv(PLAIN_LOGIN)
    at = argv.index("--uid")
    groups = ",".join(str(g) for g in os.getgrouplist("nobody", 65534))
    assert argv[at : at + 6] == ["--uid", "65534", "--gid", "65534", "--groups", groups]


@pytest.mark.parametrize(
    ("client", "server", "standard"),
    [
        ("SSH-2.0-AsyncSSH_2.24.1", "SSH-2.0-AsyncSSH_2.24.1", True),
        ("SSH-2.0-AsyncSSH_2.24.1", f"SSH-2.0-{SERVER_VERSION}", False),
        ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "SSH-2.0-AsyncSSH_2.24.1", False),
        ("SSH-2.0-paramiko_3.4.0", "SSH-2.0-AsyncSSH_2.24.1", False),
        ("", "", False),
    ],
    ids=["asyncssh", "asyncssh-to-the-node", "openssh", "paramiko", "unknown"],
)
def test_symlink_order_follows_what_the_client_takes_the_server_for(
    client: str, server: str, standard: bool
) -> None:
    assert sftp_child.standard_symlink(client, server) is standard
    argv = sftp_child.argv(ROOT_LOGIN, client, server)
    assert ("--standard-symlink" in argv) is standard

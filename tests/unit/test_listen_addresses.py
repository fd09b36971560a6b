"""``jumpgate start`` checks its listen addresses before anything starts: two listeners on one
port were refused only after "platform started" (the second bind failed then, and the daemon
exited with asyncio's message; a test run saw it when two free ports came out the same)."""

import socket
from pathlib import Path
from typing import Any

import pytest

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.daemon import listeners
from jumpgate.cli.daemon.config import load
from tests.support import free_port, free_ports

AddrInfo = tuple[int, int, int, str, Any]


def _addresses(web: int, ssh: int, tunnel: int) -> dict[str, str]:
    return {
        "web_listen_addr": f"127.0.0.1:{web}",
        "ssh_listen_addr": f"127.0.0.1:{ssh}",
        "tunnel_listen_addr": f"127.0.0.1:{tunnel}",
    }


@pytest.mark.parametrize(
    ("second", "flag"),
    [("diag_addr", "--diag-addr"), ("peer_listen_addr", "peer_listen_addr")],
)
def test_a_port_named_twice_is_one_line_before_anything_starts(
    tmp_path: Path, second: str, flag: str
) -> None:
    web, ssh, tunnel = free_ports(3)
    config = load(
        None,
        {
            "data_dir": str(tmp_path),
            **_addresses(web, ssh, tunnel),
            second: f"127.0.0.1:{tunnel}",
            **({"peer_public_addr": "10.0.0.1:3025"} if second == "peer_listen_addr" else {}),
        },
    )
    with pytest.raises(CLIError) as raised:
        listeners.check(config)
    assert str(raised.value) == (
        f"{second}: 127.0.0.1:{tunnel} is also tunnel_listen_addr: give each listener a port "
        f"of its own ({flag})"
    )


def test_the_same_port_on_a_wildcard_and_on_loopback_is_the_same_port(tmp_path: Path) -> None:
    web, ssh = free_ports(2)
    config = load(
        None, {"data_dir": str(tmp_path), **_addresses(web, ssh, 0), "diag_addr": f"0.0.0.0:{ssh}"}
    )
    with pytest.raises(CLIError, match=r"^diag_addr: 0\.0\.0\.0:\d+ is also ssh_listen_addr"):
        listeners.check(config)


def test_port_0_and_other_hosts_are_no_conflict(tmp_path: Path) -> None:
    web = free_port()
    config = load(
        None,
        {
            "data_dir": str(tmp_path),
            **_addresses(web, 0, 0),
            "diag_addr": f"127.0.0.2:{web}",  # loopback holds all of 127/8
        },
    )
    listeners.check(config)  # every 0 is a port of its own; 127.0.0.2 is another address


def test_one_link_local_address_on_two_interfaces_is_two_addresses() -> None:
    """``fe80::1%eth0`` and ``fe80::1%lo`` are different addresses: getaddrinfo gives the
    interface as the scope id, apart from the address."""
    v6 = socket.AF_INET6

    def found(scope: int) -> list[AddrInfo]:
        return [(v6, socket.SOCK_STREAM, 6, "", ("fe80::1", 4031, 0, scope))]

    taken: dict[tuple[int, str, int], str] = {}
    listeners._named_twice("web_listen_addr", "[fe80::1%eth0]:4031", found(2), taken)
    listeners._named_twice("ssh_listen_addr", "[fe80::1%lo]:4031", found(1), taken)
    with pytest.raises(CLIError, match=r"^diag_addr: \[fe80::1%eth0\]:4031 is also web_listen"):
        listeners._named_twice("diag_addr", "[fe80::1%eth0]:4031", found(2), taken)

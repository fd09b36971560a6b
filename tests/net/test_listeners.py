"""Listening sockets bound before the server: what a successor process could be handed."""

import socket

import pytest

from jumpgate.edge_proxy import listeners


def test_port_zero_gives_every_address_of_a_name_the_same_free_port() -> None:
    socks = listeners.bind("localhost", 0)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1
        assert ports != {0}
        assert all(not s.getblocking() for s in socks)
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # listening: the connection is queued before any server exists
    finally:
        for s in socks:
            s.close()


def test_an_address_in_use_is_an_oserror_that_says_so() -> None:
    [taken] = listeners.bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError, match="in use") as refused:
            listeners.bind("127.0.0.1", taken.getsockname()[1])
        assert refused.value.strerror
    finally:
        taken.close()

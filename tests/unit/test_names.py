"""How a user's host names a node: every form OpenSSH and jump send, and what is echoed back."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from jumpgate.protocol import names
from jumpgate.protocol.names import MAX_SHOWN, AmbiguousNode, UnknownNode, pick_node

UUID = "5e977b06-9184-4a76-9de8-842cc40e7655"


@dataclass(frozen=True)
class _Node:
    host_id: str
    nodename: str


ONLINE = [_Node(UUID, "web-1"), _Node("0f0f0f0f-0000-4000-8000-000000000000", "db-1")]


@pytest.mark.parametrize(
    "name",
    [
        "web-1",
        "WEB-1",
        "web-1.",
        UUID,
        f"{UUID}.",
        f"{UUID}.acme",
        f"{UUID}.acme.",
        "web-1.acme",
        "web-1.acme.localhost",
        "web-1.acme.localhost.",
        "Web-1.ACME.LocalHost.",
    ],
    ids=[
        "name",
        "upper-case",
        "name-trailing-dot",
        "uuid",
        "uuid-trailing-dot",
        "uuid-tenant",
        "uuid-tenant-trailing-dot",
        "name-tenant",
        "fqdn",
        "fqdn-trailing-dot",
        "fqdn-mixed-case-trailing-dot",
    ],
)
def test_every_form_of_a_node_name_finds_it(name: str) -> None:
    assert pick_node("acme", name, ONLINE, public_addr="localhost").host_id == UUID


@pytest.mark.parametrize(
    "name",
    ["web-1.other.localhost", "web-1.acme.example.com", "web-1..", "web-1.acme.localhost.."],
    ids=["other-tenant", "other-public-addr", "two-dots", "fqdn-two-dots"],
)
def test_names_of_no_node_here(name: str) -> None:
    with pytest.raises(UnknownNode):
        pick_node("acme", name, ONLINE, public_addr="localhost")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("x" * 100_000, UnknownNode),
        ("é" * 100_000 + ".acme.localhost.", UnknownNode),
        ("web-1", AmbiguousNode),
    ],
    ids=["100k-unknown", "100k-fqdn-unknown", "ambiguous"],
)
def test_the_error_echoes_at_most_the_start_of_the_name(name: str, error: type[Exception]) -> None:
    online = [*ONLINE, _Node("1f1f1f1f-0000-4000-8000-000000000000", "web-1")]
    with pytest.raises(error) as raised:
        pick_node("acme", name, online, public_addr="localhost")
    message = str(raised.value)
    assert len(message) < 200, message[:300]
    assert repr(name[:MAX_SHOWN] + ("…" if len(name) > MAX_SHOWN else ""))[1:-1] in message
    assert message.endswith(("see jump ls", ")"))


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (names.check_tenant_name, "acme\n"),
        (names.check_user_name, "alice\n"),
        (names.check_login, "root\n"),
        (names.check_nodename, "web-1\n"),
        (names.check_proxy_id, "proxy-1\n"),
    ],
    ids=["tenant", "user", "login", "nodename", "proxy-id"],
)
def test_a_trailing_newline_is_not_part_of_a_valid_name(
    check: Callable[[str], str], value: str
) -> None:
    """``$`` matches before a final newline: each name is checked whole."""
    assert check(value.rstrip("\n")) == value.rstrip("\n")
    with pytest.raises(ValueError, match="not"):
        check(value)

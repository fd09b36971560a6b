"""``certs.is_trusted``: the one test of "is this key one of the CA's keys" (decision 0022)."""

import pytest

from jumpgate.control_plane.ca import generate_key
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType

ONE = certs.openssh_public(generate_key(KeyType.ED25519).public_key())
TWO = certs.openssh_public(generate_key(KeyType.ECDSA_P256).public_key())
OTHER = certs.openssh_public(generate_key(KeyType.ED25519).public_key())


@pytest.mark.parametrize(
    ("key", "trusted", "expected"),
    [
        (ONE, [ONE], True),
        (TWO, [ONE, TWO], True),
        (ONE + " alice@laptop", [ONE], True),
        (ONE, ["  " + ONE + " ca comment\n"], True),
        (OTHER, [ONE, TWO], False),
        (ONE, [], False),
        ("ssh-ed25519", [ONE], False),
        ("ssh-ed25519 not*base64", ["ssh-ed25519 not*base64"], False),
        ("", [""], False),
        (ONE.split()[0] + " " + TWO.split()[1], [TWO], True),
    ],
    ids=[
        "the one key",
        "the second of two",
        "a comment on the key",
        "spacing and a comment in the set",
        "a key not in the set",
        "an empty set",
        "no key field",
        "not base64, even when listed",
        "empty",
        "the key blob decides, not the type name",
    ],
)
def test_is_trusted(key: str, trusted: list[str], expected: bool) -> None:
    assert certs.is_trusted(key, trusted) is expected

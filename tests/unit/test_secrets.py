"""Envelope encryption under the master key, and the master key file."""

import base64
import json
import os
from pathlib import Path

import pytest

from jumpgate.control_plane.secrets import (
    MasterKey,
    SecretBox,
    SecretUnreadable,
    load_or_create_master_key,
)


def test_seal_and_open_round_trip() -> None:
    box = SecretBox(MasterKey.from_bytes(os.urandom(32)))
    sealed = box.seal(b"-----BEGIN PRIVATE KEY-----", context="acme/cas/user/private_key")
    assert b"PRIVATE" not in sealed.encode()
    assert box.open(sealed, context="acme/cas/user/private_key") == b"-----BEGIN PRIVATE KEY-----"
    assert box.seal(b"same", context="c") != box.seal(b"same", context="c")  # fresh data key


def test_secret_moved_to_another_context_does_not_open() -> None:
    box = SecretBox(MasterKey.from_bytes(os.urandom(32)))
    sealed = box.seal(b"secret", context="acme/cas/user/private_key")
    with pytest.raises(SecretUnreadable):
        box.open(sealed, context="globex/cas/user/private_key")


@pytest.mark.parametrize("field", ["ct", "wk", "n", "wn"])
def test_altered_envelope_does_not_open(field: str) -> None:
    box = SecretBox(MasterKey.from_bytes(os.urandom(32)))
    envelope = json.loads(box.seal(b"secret", context="c"))
    raw = bytearray(base64.b64decode(envelope[field]))
    raw[0] ^= 1
    envelope[field] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(SecretUnreadable):
        box.open(json.dumps(envelope), context="c")


def test_other_master_key_cannot_open() -> None:
    sealed = SecretBox(MasterKey.from_bytes(os.urandom(32))).seal(b"s", context="c")
    with pytest.raises(SecretUnreadable, match="another master key"):
        SecretBox(MasterKey.from_bytes(os.urandom(32))).open(sealed, context="c")


def test_master_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    first = load_or_create_master_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_master_key(path) == first


def test_master_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_or_create_master_key(path)
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_master_key(path)


def test_master_key_file_with_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("not base64 at all!\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not a Jumpgate master key"):
        load_or_create_master_key(path)

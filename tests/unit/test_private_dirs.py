"""Directories holding a node's keys, recordings and audit, or a user's profiles, are 0700
from the start (``mkdir(parents=True, mode=...)`` gives the mode to the last one only), and
an existing node data dir open to others is tightened (issue 14)."""

import logging
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.cli.common import profile
from jumpgate.node_agent.agent import Agent
from jumpgate.node_agent.config import AgentConfig
from jumpgate.node_agent.recording import Spool
from jumpgate.protocol.recording import RecordingMeta


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _umask_022() -> object:
    old = os.umask(0o022)
    yield None
    os.umask(old)


def test_a_new_node_data_dir_and_its_spools_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "lib" / "jumpgate"
    Agent(AgentConfig(data_dir=data_dir))
    for path in (data_dir, data_dir / "recordings", data_dir / "audit"):
        assert _mode(path) == 0o700, f"{path} is {oct(_mode(path))}"


def test_an_existing_open_data_dir_is_tightened_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "node"
    (data_dir / "recordings").mkdir(parents=True, mode=0o755)
    data_dir.chmod(0o755)
    with caplog.at_level(logging.INFO):
        Agent(AgentConfig(data_dir=data_dir))
    assert _mode(data_dir) == 0o700
    assert _mode(data_dir / "recordings") == 0o700
    assert any("0700" in r.getMessage() for r in caplog.records), caplog.text


def test_the_recording_spool_root_is_private(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "recordings"
    spool = Spool(root)
    spool.create(
        RecordingMeta(session_id=str(uuid.uuid4()), kind="shell", started=datetime.now(UTC))
    )
    assert _mode(root) == 0o700


def test_the_profile_directories_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home" / ".jumpgate"
    monkeypatch.setenv("JUMPGATE_HOME", str(home))
    saved = profile.Profile(
        proxy="acme.localhost:3080",
        tenant="acme",
        user="alice",
        roles=["access"],
        logins=["root"],
        valid_before="2030-01-01T00:00:00+00:00",
        insecure=True,
        ca_pin="sha256:x",
    )
    profile.save(
        saved, ed25519.Ed25519PrivateKey.generate(), "ssh-ed25519-cert-v01@openssh.com AAAA"
    )
    for path in (home, home / "profiles", saved.directory):
        assert _mode(path) == 0o700, f"{path} is {oct(_mode(path))}"

"""``pam_session`` with Debian's PAM modules, from a PAM directory of the test's
(``pam_start_confdir``): the account stage, the session stage opened and closed once, the
environment it sets, and what a refusing stack says."""

import os
from pathlib import Path

import pytest

from jumpgate.node_agent.pam_session import PamError, PamRefused, PamSession

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="PAM's session stage runs as root")


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    directory = tmp_path / "pam.d"
    directory.mkdir()
    (tmp_path / "env").write_text("JG_ONE=1\nJG_TWO=two words\n")
    hook = tmp_path / "hook"
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_RHOST $PAM_TTY" >> {tmp_path}/stages\n')
    hook.chmod(0o755)
    (directory / "session").write_text(
        "account required pam_permit.so\n"
        f"session required pam_env.so readenv=1 envfile={tmp_path}/env conffile=/dev/null\n"
        f"session required pam_exec.so {hook}\n"
    )
    (directory / "locked").write_text(
        "account required pam_echo.so Your account is locked until Monday\n"
        "account required pam_deny.so\n"
    )
    return directory


def test_a_session_is_opened_with_its_environment_and_closed_once(
    confdir: Path, tmp_path: Path
) -> None:
    session = PamSession.open("session", "root", rhost="192.0.2.7", confdir=confdir)
    assert session.environment == {"JG_ONE": "1", "JG_TWO": "two words"}
    assert (tmp_path / "stages").read_text() == "open_session 192.0.2.7 ssh\n"
    session.close()
    session.close()
    assert (tmp_path / "stages").read_text().splitlines() == [
        "open_session 192.0.2.7 ssh",
        "close_session 192.0.2.7 ssh",
    ]


def test_a_refusing_account_stage_says_what_its_modules_said(confdir: Path) -> None:
    with pytest.raises(PamRefused) as refused:
        PamSession.open("locked", "root", rhost="192.0.2.7", confdir=confdir)
    assert str(refused.value) == (
        "PAM (service 'locked') refused login 'root': Your account is locked until Monday; "
        "ask the node's admin"
    )


def test_a_service_that_is_not_there_is_an_error(confdir: Path) -> None:
    with pytest.raises(PamError, match="PAM could not start service 'nowhere'"):
        PamSession.open("nowhere", "root", rhost="192.0.2.7", confdir=confdir)

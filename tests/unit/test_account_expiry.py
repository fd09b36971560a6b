"""``sessions.expired``: an account's expiry in ``/etc/shadow``, read as sshd and pam_unix
read it (expired from its expiry day on)."""

from pathlib import Path

import pytest

from jumpgate.node_agent.sessions import expired

TODAY = 20_000


@pytest.mark.parametrize(
    ("field", "is_expired"),
    [("", False), ("-1", False), ("19999", True), ("20000", True), ("20001", False)],
    ids=["no-date", "minus-one", "yesterday", "today", "tomorrow"],
)
def test_an_account_expires_on_its_day(tmp_path: Path, field: str, is_expired: bool) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(f"alice:!:19000:0:99999:7::{field}:\nbob:!:19000:0:99999:7::1:\n")
    assert expired("alice", shadow=str(shadow), today=TODAY) is is_expired


def test_an_account_it_cannot_see_is_not_taken_for_expired(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text("bob:!:19000:0:99999:7::1:\n")
    assert expired("alice", shadow=str(shadow), today=TODAY) is False
    assert expired("bo", shadow=str(shadow), today=TODAY) is False  # not a prefix match
    assert expired("alice", shadow=str(tmp_path / "none"), today=TODAY) is False

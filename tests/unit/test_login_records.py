"""``login_records``: what glibc writes for a PTY session, read back by ``who``, ``last``
and ``utmpdump`` from files of the test's (never the machine's)."""

import re
import subprocess
import time
from pathlib import Path

import pytest

from jumpgate.node_agent.login_records import LoginRecord, LoginRecords


@pytest.fixture
def records(tmp_path: Path) -> LoginRecords:
    for name in ("utmp", "wtmp"):
        (tmp_path / name).touch()
    return LoginRecords(str(tmp_path / "utmp"), str(tmp_path / "wtmp"))


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("host", ["192.0.2.7", "2001:db8::7"], ids=["ipv4", "ipv6"])
def test_a_login_is_in_who_until_its_logout_then_in_last(records: LoginRecords, host: str) -> None:
    record = LoginRecord("/dev/pts/42", "alice", host, 4242)
    records.login(record)
    assert re.fullmatch(
        rf"alice +pts/42 +\S+ \S+ \({re.escape(host)}\)\n", _run("who", records.utmp)
    )
    records.logout(record)
    assert _run("who", records.utmp) == ""
    dump = _run("utmpdump", records.wtmp)
    assert re.search(
        rf"^\[7\] \[04242\] \[s/42\] \[alice +\] \[pts/42 +\] \[{host} +\] \[{host} +\]", dump, re.M
    ), dump
    assert re.search(r"^\[8\] \[04242\] \[s/42\] \[ +\] \[pts/42 +\]", dump, re.M), dump
    time.sleep(1.1)  # ``last`` says "still running" of a logout in its own second
    assert re.match(r"alice +pts/42 .* - \d\d:\d\d +\(00:00\)", _run("last", "-f", records.wtmp))


def test_files_that_do_not_exist_are_not_created(tmp_path: Path) -> None:
    records = LoginRecords(str(tmp_path / "utmp"), str(tmp_path / "wtmp"))
    record = LoginRecord("/dev/pts/1", "alice", "192.0.2.7", 1)
    records.login(record)
    records.logout(record)
    assert list(tmp_path.iterdir()) == []

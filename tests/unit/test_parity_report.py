"""The sshd parity suite's closing count (tests/net/parity_report.py) reads node ids right."""

import pytest
from _pytest.reports import TestReport

from tests.net.parity_report import ParityCount, case_of

MODULE = "tests/net/test_sshd_parity.py::"


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        (f"{MODULE}test_yes[sshd]", ("test_yes", "sshd")),
        (f"{MODULE}test_yes[jumpgate]@sshd-parity", ("test_yes", "jumpgate")),
        (f"{MODULE}test_scp[sshd-scp-O]", ("test_scp[scp-O]", "sshd")),
        (f"{MODULE}test_scp[jumpgate-scp-sftp]@sshd-parity", ("test_scp[scp-sftp]", "jumpgate")),
        (f"{MODULE}test_sftp_without_server[jumpgate]", ("test_sftp_without_server", "jumpgate")),
        ("tests/e2e/test_sessions.py::test_x[sshd]", None),
        (f"{MODULE}test_unparametrized", None),
    ],
    ids=["sshd", "xdist-group", "second-param", "both", "sftp-in-name", "other-module", "no-id"],
)
def test_case_of_a_node_id(nodeid: str, expected: tuple[str, str] | None) -> None:
    assert case_of(nodeid) == expected


def _report(nodeid: str, outcome: str, when: str = "call", why: str = "") -> TestReport:
    return TestReport(nodeid, ("x", 0, "x"), {}, outcome, why or None, when)  # type: ignore[arg-type]


def test_a_difference_is_a_case_that_passed_on_sshd_only() -> None:
    count = ParityCount()
    for report in [
        _report(f"{MODULE}test_a[sshd]", "passed"),
        _report(f"{MODULE}test_a[jumpgate]", "failed", why="AssertionError: stderr lost\nmore"),
        _report(f"{MODULE}test_b[sshd]", "passed", when="setup"),
        _report(f"{MODULE}test_b[sshd]", "passed"),
        _report(f"{MODULE}test_b[jumpgate]", "passed"),
        _report(f"{MODULE}test_c[sshd]", "failed", when="setup", why="no sshd"),
        _report(f"{MODULE}test_c[jumpgate]", "passed"),
        _report(f"{MODULE}test_d[sshd]", "passed"),
        _report(f"{MODULE}test_d[jumpgate]", "passed"),
        _report(f"{MODULE}test_d[jumpgate]", "failed", when="teardown", why="leaked"),
    ]:
        count.add(report)
    assert count.lines() == [
        "4 cases, 2 differences from Debian's sshd",
        "  differs: test_a: AssertionError: stderr lost",
        "  differs: test_d: leaked",
        "  sshd itself did not pass (the case is wrong, or the machine): test_c",
    ]


def test_no_parity_case_prints_nothing() -> None:
    count = ParityCount()
    count.add(_report("tests/unit/test_x.py::test_y", "failed"))
    assert count.lines() == []

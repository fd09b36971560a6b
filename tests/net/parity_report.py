"""The sshd parity suite's closing count: how many cases, and which differ from sshd.

Its two hooks are imported by ``tests/conftest.py``; under xdist they run on the controller,
which sees every worker's reports. A case is a test of ``test_sshd_parity.py`` without its
``[sshd]``/``[jumpgate]`` part; a difference is a case that passed on sshd and not on the node.
"""

import re

import pytest

PARITY_MODULE = "test_sshd_parity.py::"
_TARGET = re.compile(r"(?:^|-)(sshd|jumpgate)(?:-|$)")

_outcomes: dict[tuple[str, str], tuple[str, str]] = {}


def _case(report: pytest.TestReport) -> tuple[str, str] | None:
    """(case, target) of a parity report; None for any other test."""
    if PARITY_MODULE not in report.nodeid or "[" not in report.nodeid:
        return None
    name, params = report.nodeid.split("::", 1)[1].rstrip("]").split("[", 1)
    found = _TARGET.search(params)
    if found is None:
        return None
    rest = (params[: found.start()] + "-" + params[found.end() :]).strip("-")
    return (f"{name}[{rest}]" if rest else name), found.group(1)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember each parity case's outcome on each target (a failed setup counts as failed)."""
    key = _case(report)
    if key is None or (report.when != "call" and report.passed):
        return
    if report.failed or key not in _outcomes or report.when == "call":
        reason = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            text = crash.message if crash is not None else str(report.longrepr)
            reason = text.strip().splitlines()[0][:200] if text.strip() else ""
        _outcomes[key] = (report.outcome, reason)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    cases = sorted({case for case, _ in _outcomes})
    differences = [
        (case, _outcomes[(case, "jumpgate")][1])
        for case in cases
        if _outcomes.get((case, "sshd"), ("",))[0] == "passed"
        and _outcomes.get((case, "jumpgate"), ("passed",))[0] != "passed"
    ]
    sshd_failed = [c for c in cases if _outcomes.get((c, "sshd"), ("passed",))[0] == "failed"]
    write = terminalreporter.write_line
    terminalreporter.section("sshd parity")
    write(f"{len(cases)} cases, {len(differences)} differences from Debian's sshd")
    for case, reason in differences:
        write(f"  differs: {case}: {reason}")
    for case in sshd_failed:
        write(f"  sshd itself failed (the case is wrong, or the machine): {case}")

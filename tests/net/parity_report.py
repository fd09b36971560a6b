"""The sshd parity suite's closing count: how many cases, and which differ from sshd.

Its two hooks are imported by ``tests/conftest.py``; under xdist they run on the controller,
which sees every worker's reports. A case is a test of ``test_sshd_parity.py`` without its
``sshd``/``jumpgate`` id; a difference is a case that passed on sshd and not on the node.
"""

import re

import pytest

PARITY_MODULE = "test_sshd_parity.py::"
_GROUP = re.compile(r"@[\w-]+$")  # xdist's loadgroup ends a node id with "@GROUP"
_TARGET = re.compile(r"(?:^|-)(sshd|jumpgate)(?:-|$)")


def case_of(nodeid: str) -> tuple[str, str] | None:
    """(case, target) of a parity test's node id; None for any other test."""
    nodeid = _GROUP.sub("", nodeid)
    if PARITY_MODULE not in nodeid or not nodeid.endswith("]"):
        return None
    name, params = nodeid.split("::", 1)[1][:-1].split("[", 1)
    found = _TARGET.search(params)
    if found is None:
        return None
    rest = (params[: found.start()] + "-" + params[found.end() :]).strip("-")
    return (f"{name}[{rest}]" if rest else name), found.group(1)


class ParityCount:
    """Outcomes of the parity cases on each target, as their reports arrive."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], tuple[str, str]] = {}

    def add(self, report: pytest.TestReport) -> None:
        """A failed setup or teardown counts as a failed case; a skip as not run."""
        key = case_of(report.nodeid)
        if key is None or (report.when != "call" and not report.failed):
            return
        if report.failed and key in self.outcomes and self.outcomes[key][0] == "failed":
            return  # the first failure of a case says why
        reason = ""
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)
            text = (crash.message if crash is not None else str(report.longrepr)).strip()
            reason = text.splitlines()[0][:200] if text else ""
        self.outcomes[key] = (report.outcome, reason)

    def lines(self) -> list[str]:
        """The count, then each difference with the first line of its failure."""
        cases = sorted({case for case, _ in self.outcomes})
        if not cases:
            return []

        def outcome(case: str, target: str) -> str:
            return self.outcomes.get((case, target), ("not run", ""))[0]

        differences = [
            c
            for c in cases
            if outcome(c, "sshd") == "passed" and outcome(c, "jumpgate") != "passed"
        ]
        lines = [f"{len(cases)} cases, {len(differences)} differences from Debian's sshd"]
        lines += [
            f"  differs: {c}: {self.outcomes.get((c, 'jumpgate'), ('', 'not run'))[1]}"
            for c in differences
        ]
        lines += [
            f"  sshd itself did not pass (the case is wrong, or the machine): {c}"
            for c in cases
            if outcome(c, "sshd") != "passed"
        ]
        return lines


_count = ParityCount()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _count.add(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = _count.lines()
    if lines:
        terminalreporter.section("sshd parity")
        for line in lines:
            terminalreporter.write_line(line)

"""The proxy and the node agent stay in rooms a reader can hold in mind (issue 15).

Every module of ``edge_proxy`` and ``node_agent`` is held to ``MAX_LINES``: a module that
grows past it is split by what it holds, not left to become the next ``ssh_fronts.py``.
"""

from pathlib import Path

import pytest

import jumpgate

MAX_LINES = 420
"""About 400, with room for a docstring's last paragraph; not a target to fill."""
ROOT = Path(jumpgate.__file__).parent
MODULES = sorted(
    path for package in ("edge_proxy", "node_agent") for path in (ROOT / package).glob("*.py")
)


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 20


@pytest.mark.parametrize("path", MODULES, ids=[f"{p.parent.name}/{p.name}" for p in MODULES])
def test_a_module_of_the_proxy_or_the_agent_stays_under_400_lines(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it by what it holds"

"""What the daemon's log says at info: ours, not every library's every request (a demo's
node logged "HTTP Request: GET https://..." for each call it made)."""

import logging
from collections.abc import Iterator

import pytest

from jumpgate.cli.daemon import logs


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {
        n: logging.getLogger(n).level for n in ("aiohttp", "asyncssh", "httpx", "pynamodb")
    }
    yield
    root.handlers[:], root.level = handlers, level
    for name, was in libraries.items():
        logging.getLogger(name).setLevel(was)


@pytest.mark.usefixtures("restored")
@pytest.mark.parametrize("library", ["aiohttp", "asyncssh", "httpx", "pynamodb"])
def test_libraries_say_only_warnings_at_info(library: str) -> None:
    logs.configure("info")
    assert not logging.getLogger(library).isEnabledFor(logging.INFO)
    assert logging.getLogger(library).isEnabledFor(logging.WARNING)
    assert logging.getLogger("jumpgate").isEnabledFor(logging.INFO)

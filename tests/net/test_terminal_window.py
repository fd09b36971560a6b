"""``jump ssh`` follows the terminal's size from before the session opens.

A window change (SIGWINCH) that comes while the session is being opened (channel, PTY and
shell requests in flight) must reach the node once it is open, as with ssh(1): an e2e run on
a loaded machine lost one, so the node never heard of the new size. A real asyncssh server on
127.0.0.1 notes the sizes its session is told; the terminal is a real pty whose size the
test sets, with ``COLUMNS=80`` and ``LINES=24`` exported as some shells (and pytest-xdist's
workers) do: like ssh(1), the client asks the terminal (TIOCGWINSZ), not the environment,
which ``shutil.get_terminal_size`` prefers (an e2e run under xdist never saw a change).
"""

import asyncio
import fcntl
import os
import pty
import struct
import termios

import asyncssh
import pytest

from jumpgate.cli.jump.ssh import TerminalWindow
from tests.support import open_ssh_server

pytestmark = pytest.mark.net


async def _told(monkeypatch: pytest.MonkeyPatch, change_while_opening: bool) -> list[str]:
    """The sizes the server's session was told: at its PTY request, then each change."""
    told: list[str] = []
    done = asyncio.Event()

    async def session(process: asyncssh.SSHServerProcess[bytes]) -> None:
        width, height, _, _ = process.term_size
        told.append(f"{width}x{height}")
        try:
            await asyncio.wait_for(process.stdin.read(1), 5)
        except asyncssh.TerminalSizeChanged as change:
            told.append(f"{change.width}x{change.height}")
        except TimeoutError:
            pass
        process.exit(0)
        done.set()

    server, port = await open_ssh_server(session)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    parent, terminal = pty.openpty()
    _set_size(terminal, 80, 24)
    window = TerminalWindow(terminal)

    def resize() -> None:
        _set_size(terminal, 111, 33)
        window.changed()  # what the SIGWINCH handler does

    try:
        async with asyncssh.connect(
            "127.0.0.1", port, username="x", known_hosts=None, client_keys=None
        ) as conn:
            opening = asyncio.ensure_future(
                conn.create_process(term_type="xterm", term_size=window.size, encoding=None)
            )
            if change_while_opening:
                await asyncio.sleep(0)  # the channel open is sent, its answer not yet in
                assert not opening.done()
                resize()
            process = await opening
            window.opened(process)
            if not change_while_opening:
                resize()
            await asyncio.wait_for(done.wait(), 10)
            process.close()
    finally:
        server.close()
        await server.wait_closed()
        os.close(parent)
        os.close(terminal)
    return told


def _set_size(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def test_a_window_change_after_the_session_opened_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert asyncio.run(_told(monkeypatch, change_while_opening=False)) == ["80x24", "111x33"]


def test_a_window_change_while_the_session_opens_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert asyncio.run(_told(monkeypatch, change_while_opening=True)) == ["80x24", "111x33"]

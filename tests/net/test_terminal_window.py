"""``jump ssh`` follows the terminal's size from before the session opens.

A window change (SIGWINCH) that comes while the session is being opened (channel, PTY and
shell requests in flight) must reach the node once it is open, as with ssh(1): an e2e run on
a loaded machine lost one, so the node never heard of the new size. A real asyncssh server on
127.0.0.1 notes the sizes its session is told; the terminal's size is what ``COLUMNS`` and
``LINES`` say (``shutil.get_terminal_size`` reads them first).
"""

import asyncio

import asyncssh
import pytest

from jumpgate.cli.jump.ssh import TerminalWindow

pytestmark = pytest.mark.net


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about the session


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

    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=_Server,
        process_factory=session, encoding=None,
    )  # fmt: skip
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    window = TerminalWindow()

    def resize() -> None:
        monkeypatch.setenv("COLUMNS", "111")
        monkeypatch.setenv("LINES", "33")
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
    return told


def test_a_window_change_after_the_session_opened_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert asyncio.run(_told(monkeypatch, change_while_opening=False)) == ["80x24", "111x33"]


def test_a_window_change_while_the_session_opens_reaches_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert asyncio.run(_told(monkeypatch, change_while_opening=True)) == ["80x24", "111x33"]

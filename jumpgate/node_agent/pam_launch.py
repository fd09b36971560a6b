"""Starting a session's command through its PAM launcher (``pam_launcher``), when the node
runs PAM: the agent's side of the launcher's two pipes.

``Launcher.start`` starts the launcher on the session's stdio (or PTY slave), in a session of
its own, and hands it what it needs (``pam_launcher``'s SPEC); once PAM's stages passed it
calls ``opened`` (the session starts: its recording and ``session.start``), says ``go``, and
returns the launcher's process (whose exit is the command's) and the command's pid (signals
and hangups go to it, as to a command started without PAM). PAM refusing or failing:
``PamError`` with its one line, and nothing ran.
"""

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from jumpgate.node_agent.pam_session import PamError
from jumpgate.node_agent.sftp_child import ROOT

BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from jumpgate.node_agent.pam_launcher import main; main(sys.argv[2:])"
)
LAUNCHER = (sys.executable, "-I", "-c", BOOT, ROOT)
"""The launcher's command line: the agent's interpreter and its own copy of Jumpgate, isolated
(``-I``) from the environment and working directory it runs as root in (as ``sftp_child``)."""


@dataclass(frozen=True)
class Launcher:
    """How a node's sessions run PAM: its service, for the user at ``rhost``."""

    service: str  # the PAM service (``pam.service_name``)
    user: str  # the login
    rhost: str  # the user's address (PAM_RHOST)
    confdir: Path | None = None  # the services' directory; None: /etc/pam.d

    async def start(
        self,
        argv: list[str],
        layers: tuple[Mapping[str, str], Mapping[str, str]],
        login: tuple[int, int, str],
        env: Mapping[str, str] | None,
        stdio: tuple[int, int, int],
        *,
        tty: str | None,
        opened: Callable[[], None],
    ) -> tuple[asyncio.subprocess.Process, int]:
        """Run ``argv`` as the login (uid, gid, home) in a PAM session, its environment
        ``layers`` under and over PAM's, or exactly ``env`` if given (a child started as
        root: PAM's and the client's variables never reach it); ``tty``: the PTY slave's
        path, if on one."""
        uid, gid, home = login
        spec = {
            "service": self.service,
            "user": self.user,
            "rhost": self.rhost,
            "tty": tty,
            "confdir": str(self.confdir) if self.confdir else None,
            "argv": argv,
            "before": dict(layers[0]),
            "after": dict(layers[1]),
            "env": dict(env) if env is not None else None,
            "uid": uid,
            "gid": gid,
            "home": home,
            "pty": tty is not None,
        }
        spec_read, spec_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            child = await asyncio.create_subprocess_exec(
                *LAUNCHER,
                str(spec_read),
                str(status_write),
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                pass_fds=(spec_read, status_write),
                start_new_session=True,
                cwd="/",
            )
        except BaseException:
            for fd in (spec_write, status_read):
                os.close(fd)
            raise
        finally:
            for fd in (spec_read, status_write):
                os.close(fd)
        status = asyncio.StreamReader()
        with contextlib.ExitStack() as ours:
            ours.callback(os.close, spec_write)  # EOF before ``go``: the launcher gives up
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(status),
                os.fdopen(status_read, "rb", buffering=0),
            )
            ours.callback(transport.close)
            await asyncio.to_thread(_write, spec_write, json.dumps(spec) + "\n")
            said = (await status.readline()).decode(errors="replace").strip()
            if said != "ok":
                await child.wait()
                raise PamError(
                    said.removeprefix("no ")
                    if said.startswith("no ")
                    else f"PAM (service {self.service!r}) could not run: its launcher "
                    f"ended (exit {child.returncode}); ask the node's admin"
                )
            try:
                opened()  # the session starts; it may be refused (its recording cannot)
            except Exception:
                ours.close()  # EOF, not ``go``: the launcher closes PAM's session and ends
                await child.wait()
                raise
            _write(spec_write, "go\n")
            said = (await status.readline()).decode(errors="replace").strip()
            rest = (await status.read()).decode(errors="replace").strip()  # EOF: exec'd
        if not said.startswith("pid ") or rest:
            await child.wait()
            raise OSError(rest.removeprefix("error ") or f"the PAM launcher failed: {said!r}")
        return child, int(said.removeprefix("pid "))


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(fd, data) :]

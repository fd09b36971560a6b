"""The README's commands work as typed: each line of the block it marks as run after login
(``<!-- after login: ... -->``) runs in a shell against a running platform, with the demo's
names and ports replaced by the test's, and succeeds."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, LOGIN, Site

pytestmark = pytest.mark.e2e

README = Path(__file__).parents[2] / "README.md"
MARK = "<!-- after login:"
SHELL_MARKER = "readme-shell-ok"


def after_login_commands(text: str) -> list[str]:
    """The command lines of the ``sh`` block after the README's mark, comments dropped."""
    start = text.index(MARK)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, "no sh block after the mark"
    lines = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def as_here(command: str, site: Site, ssh_dir: Path) -> str:
    """``command`` with the demo's address, tenant, node and login replaced by the test's,
    ``~/.ssh`` by a directory of the test's (ssh(1) reads the real home's, whatever $HOME
    says), and plain ``ssh`` reading that directory's config, never asking."""
    port = site.cluster.port
    command = command.replace("demo.localhost:3080", f"acme.localhost:{port}")
    command = command.replace("demo.localhost", "acme.localhost")
    command = command.replace("demo-node", "web-1").replace("LOGIN@", f"{LOGIN}@")
    command = command.replace("~/.ssh", str(ssh_dir))
    if command.startswith("ssh "):
        command = f"ssh -F {ssh_dir / 'config'} -o BatchMode=yes " + command[4:]
    return command


def test_the_after_login_block_is_what_the_readme_shows() -> None:
    commands = after_login_commands(README.read_text())
    assert commands[0] == "jump ls"
    assert any(c.startswith("ssh -J ") for c in commands)
    assert any(c.startswith("jump config") or "jump config" in c for c in commands)


def test_readme_commands_after_login_work_as_typed(site: Site, tmp_path: Path) -> None:
    ssh_dir = tmp_path / "dot-ssh"
    env = {
        **site.admin.env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    commands = after_login_commands(README.read_text())
    for typed in commands:
        command = as_here(typed, site, ssh_dir)
        # A command that opens a shell reads this from its standard input, then ends.
        done = subprocess.run(
            ["bash", "-c", command],
            input=f"echo {SHELL_MARKER}; exit\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"{typed!r} as {command!r}: {done.stderr}"
        if command.startswith(("jump ssh ", "ssh ")):  # the README's open a shell
            assert SHELL_MARKER in done.stdout, f"{typed!r}: {done.stdout!r} {done.stderr!r}"
        if typed == "jump ls":
            assert re.search(r"web-1 .* online", done.stdout), done.stdout
    assert ssh_dir.stat().st_mode & 0o777 == 0o700

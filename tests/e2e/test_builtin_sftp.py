"""Copying files with a node that has no OpenSSH ``sftp-server`` (a minimal image, the default
``make up`` machine): ``jump scp``, OpenSSH's ``sftp``, ``scp`` in both its modes and rsync all
work, served by the agent's own SFTP server, and are audited as what the client ran.

The agent runs in a mount namespace with an empty tmpfs over ``/usr/lib/openssh``, so the
``sftp-server`` this machine has is not there for it (issue 16, item 4: before, every copy
failed with "0 bytes read on a total of 4 expected bytes").
"""

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    LOGIN,
    Cluster,
    Site,
    _stop_node,
    audit_events,
    build_site,
    openssh_sftp,
)

pytestmark = [pytest.mark.e2e, pytest.mark.net]

HIDDEN = "/usr/lib/openssh"
WITHOUT_SFTP_SERVER = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    f'mount -t tmpfs -o size=64k,mode=755 none {HIDDEN} && exec "$@"',
    "sh",
)
"""The agent's command runs after this: ``/usr/lib/openssh`` is empty for it alone."""


@pytest.fixture
def bare(cluster: Cluster, tmp_path: Path) -> Iterator[Site]:
    """The site with its node agent unable to see OpenSSH's ``sftp-server``."""
    if shutil.which("unshare") is None:
        pytest.fail("util-linux's unshare is needed to hide sftp-server from the agent")
    built = build_site(cluster, tmp_path, WITHOUT_SFTP_SERVER)
    assert built.node.process is not None
    hidden = Path(f"/proc/{built.node.process.pid}/root{HIDDEN}/sftp-server")
    assert not hidden.exists(), "the agent can still see sftp-server"
    yield built
    _stop_node(built)


def _tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "sub" / "empty").write_bytes(b"")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 300)
    return tree


def _same_tree(left: Path, right: Path) -> None:
    def files(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")
            if p.is_file()
        }

    assert files(left) == files(right)
    assert files(left)


def _events(site: Site, kind: str, path: Path, count: int = 1) -> list[dict[str, Any]]:
    """The ``kind`` events naming ``path``, once there are ``count`` (or after 15 s)."""
    found: list[dict[str, Any]] = []
    for _ in range(30):
        found = [e for e in audit_events(site, kind, 1, seconds=0.5) if e.get("path") == str(path)]
        if len(found) >= count:
            break
    return found


def _config(site: Site, directory: Path) -> Path:
    config = directory / "jump_config"
    config.write_text(site.admin.ok("jump", "config").out)
    return config


def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, timeout=60, check=False)


NODE = f"{LOGIN}@web-1.acme.localhost"


def test_jump_scp_both_ways_is_served_and_audited_as_scp(bare: Site, tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    up, down = tmp_path / "up", tmp_path / "down"
    up.mkdir()
    bare.admin.ok("jump", "scp", "-q", str(tree / "a.txt"), f"web-1:{up / 'one.txt'}")
    bare.admin.ok("jump", "scp", "-q", "-r", str(tree), f"web-1:{up}")
    bare.admin.ok("jump", "scp", "-q", "-r", f"web-1:{up / 'tree'}", str(down))
    bare.admin.ok("jump", "scp", "-q", f"web-1:{up / 'one.txt'}", str(tmp_path / "one.txt"))
    _same_tree(tree, down)
    assert (tmp_path / "one.txt").read_bytes() == b"alpha\n"
    [written] = _events(bare, "scp", up / "one.txt", 2)[:1]
    assert (written["action"], written["length"], written["code"]) == ("write", 6, "J3004I")
    actions = {e["action"] for e in _events(bare, "scp", up / "tree" / "sub" / "b.bin", 2)}
    assert actions == {"write", "read"}
    assert not [e for e in audit_events(bare, "sftp", 0, 0) if str(up) in e.get("path", "")]


def test_openssh_sftp_batch(bare: Site, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_bytes(b"from sftp\n")
    work = tmp_path / "remote"
    work.mkdir()
    batch = (
        f"mkdir {work}/dir\n"
        f"put {local} {work}/dir/put.txt\n"
        f"rename {work}/dir/put.txt {work}/dir/renamed.txt\n"
        f"ln -s {work}/dir/renamed.txt {work}/link\n"
        f"chmod 600 {work}/dir/renamed.txt\n"
        f"get {work}/link {tmp_path}/got.txt\n"
        f"ls -l {work}/dir\n"
        f"mkdir {work}/gone\n"
        f"rmdir {work}/gone\n"
        f"rm {work}/link\n"
        "pwd\n"
    )
    done = openssh_sftp(bare, tmp_path, batch)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "got.txt").read_bytes() == b"from sftp\n"
    assert (work / "dir" / "renamed.txt").stat().st_mode & 0o777 == 0o600
    assert not (work / "link").exists()
    assert not (work / "gone").exists()
    assert b"renamed.txt" in done.stdout
    assert b"-rw-------" in done.stdout
    assert f"Remote working directory: {Path.home()}".encode() in done.stdout
    events = _events(bare, "sftp", work / "dir" / "put.txt", 2)
    assert {e["action"] for e in events} == {"write", "rename"}, events


def test_openssh_scp_sftp_mode_and_legacy_mode_with_r(bare: Site, tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    config = _config(bare, tmp_path)
    for mode, kind in (("-s", "sftp"), ("-O", "scp")):
        up, down = tmp_path / f"up{mode}", tmp_path / f"down{mode}"
        up.mkdir()
        down.mkdir()
        for argv in ([str(tree), f"{NODE}:{up}"], [f"{NODE}:{up}/tree", str(down)]):
            done = _run("scp", mode, "-r", "-F", str(config), *argv)
            assert done.returncode == 0, (mode, done.stderr)
        _same_tree(tree, down / "tree")
        # OpenSSH 9's scp over SFTP looks exactly like sftp on the wire: it is audited as sftp.
        assert _events(bare, kind, up / "tree" / "a.txt", 2), kind


def test_rsync_both_ways(bare: Site, tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.fail("rsync is needed: apt-get install rsync")
    tree = _tree(tmp_path)
    config = _config(bare, tmp_path)
    up, down = tmp_path / "up", tmp_path / "down"
    shell = f"ssh -F {config}"
    for argv in ([f"{tree}/", f"{NODE}:{up}/"], [f"{NODE}:{up}/", f"{down}/"]):
        done = _run("rsync", "-a", "-e", shell, *argv)
        assert done.returncode == 0, done.stderr
    _same_tree(tree, down)


def test_jump_scp_names_the_path_it_could_not_write(bare: Site, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x"
    local = tmp_path / "local.txt"
    local.write_text("x")
    message = bare.admin.fails("jump", "scp", "-q", str(local), f"web-1:{missing}")
    assert message == f"jump: error: copy failed: No such file or directory: web-1:{missing}"
    nowhere = tmp_path / "nowhere" / "x"
    message = bare.admin.fails("jump", "scp", "-q", f"web-1:{local}", str(nowhere))
    assert message == f"jump: error: copy failed: No such file or directory: {nowhere}"

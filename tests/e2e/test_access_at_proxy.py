"""The proxy enforces roles and locks (issue 17, docs/decisions/0034), against a running
platform and a real node: a user whose roles do not allow a node is refused by ``jump ssh``
and by OpenSSH through ``jump config`` (its ProxyCommand and ``ssh -J``), in one line, with
a ``session.rejected`` event; a lock ends a live ``jump ssh`` session within 5 s; a node's
tunnel is pushed its tenant's locks.

Roles are written straight through the control plane's ``RoleService`` on the daemon's data
dir (the roles API is another part of issue 17), as ``test_sessions`` writes certificates.
"""

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from jumpgate.cli.daemon.config import load
from jumpgate.cli.daemon.platform import open_control_plane
from jumpgate.control_plane.plane import ControlPlane
from jumpgate.protocol.resources import (
    Conditions,
    LockTarget,
    Metadata,
    Role,
    RoleOptions,
    RoleSpec,
)
from jumpgate.protocol.tunnel_messages import PolicyUpdate
from tests.e2e.conftest import (
    BIN,
    LOGIN,
    Shell,
    Site,
    as_the_node,
    audit_events,
    signup_and_login,
)
from tests.tunnel_probe import Probe

pytestmark = pytest.mark.e2e

DEV_ONLY = Role(
    metadata=Metadata(name="dev-only"),
    spec=RoleSpec(allow=Conditions(logins=["{{internal.logins}}"], node_labels={"env": "dev"})),
)


@contextmanager
def plane_of(site: Site) -> Iterator[ControlPlane]:
    """The control plane over the running daemon's stores (SQLite: shared safely)."""
    plane = open_control_plane(load(None, {"data_dir": str(site.cluster.data_dir)}))
    try:
        yield plane
    finally:
        plane.store.close()


@dataclass
class User:
    shell: Shell
    config: Path  # what ``jump config`` printed for them

    def jump_ssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "jump"), "ssh", "web-1", *command],
            env=self.shell.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def openssh(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-F", str(self.config), "-o", "BatchMode=yes", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


ONCALL = Role(
    metadata=Metadata(name="oncall"),
    spec=RoleSpec(allow=Conditions(logins=["{{internal.logins}}"], node_labels={"*": "*"})),
)


def bob(site: Site, tmp_path: Path, roles: list[str] | None = None) -> User:
    """User bob, logged in (holding ``roles`` when given: his certificate names them)."""
    invite = site.admin.ok(
        "jumpctl", "users", "add", "bob", "--logins", LOGIN, "--format", "json"
    ).json()
    if roles is not None:
        set_roles(site, "bob", roles)
    shell = Shell(tmp_path / "bob-home")
    signup_and_login(shell, site.cluster, invite["invite_token"], "bob")
    config = tmp_path / "bob-jump-config"
    config.write_text(shell.ok("jump", "config").out)
    return User(shell, config)


def set_roles(site: Site, user: str, roles: list[str]) -> None:
    with plane_of(site) as plane:
        plane.users.update("acme", user, lambda record: replace(record, roles=roles))


def test_a_node_the_roles_do_not_allow_is_refused_in_one_line_and_audited(
    site: Site, tmp_path: Path
) -> None:
    user = bob(site, tmp_path)
    assert user.jump_ssh("echo", "in").stdout == "in\n"  # the preset access role: all nodes
    with plane_of(site) as plane:
        plane.roles.create("acme", DEV_ONLY)
    set_roles(site, "bob", ["dev-only"])  # web-1 is env=prod
    node_refusal = "your roles do not allow node 'web-1': see jump ls"
    login_refusal = f"your roles do not allow login '{LOGIN}' on node 'web-1': see jump ls"

    refused = user.jump_ssh("echo", "in")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"jump: error: {node_refusal}\n"

    host = f"{LOGIN}@web-1.acme.localhost"
    by_proxycommand = user.openssh(host, "echo in")  # jump config's ProxyCommand: -s proxy:
    assert by_proxycommand.returncode == 255
    assert f"jumpgate proxy: {login_refusal}\n" in by_proxycommand.stderr
    by_jump = user.openssh("-J", f"{LOGIN}@jumpgate-proxy.acme.localhost", host, "echo in")
    assert by_jump.returncode == 255
    assert f"administratively prohibited: {node_refusal}" in by_jump.stderr

    rejected = audit_events(site, "session.rejected", 3)
    assert sorted(e["error"] for e in rejected) == sorted(
        [node_refusal, login_refusal, node_refusal]
    )
    assert {(e["user"], e["code"], e["nodename"]) for e in rejected} == {("bob", "J2007W", "web-1")}

    set_roles(site, "bob", ["access"])  # a role change applies to the next connection
    assert user.jump_ssh("echo", "in").stdout == "in\n"


NO_FORWARDING = Role(
    metadata=Metadata(name="no-forwarding"),
    spec=RoleSpec(
        allow=Conditions(logins=["{{internal.logins}}"], node_labels={"*": "*"}),
        options=RoleOptions(port_forwarding=False),
    ),
)


def test_a_role_without_port_forwarding_still_reaches_its_nodes_through_the_proxy(
    site: Site, tmp_path: Path
) -> None:
    """Reaching a node through the proxy (jump ssh, ssh -J) is not port forwarding: a
    certificate without permit-port-forwarding still gets there (as Teleport's)."""
    with plane_of(site) as plane:
        plane.roles.create("acme", NO_FORWARDING)
    user = bob(site, tmp_path, ["no-forwarding"])
    reached = user.jump_ssh("echo", "in")
    assert (reached.returncode, reached.stdout, reached.stderr) == (0, "in\n", "")
    host = f"{LOGIN}@web-1.acme.localhost"
    by_jump = user.openssh("-J", f"{LOGIN}@jumpgate-proxy.acme.localhost", host, "echo in")
    assert (by_jump.returncode, by_jump.stdout) == (0, "in\n"), by_jump.stderr


def _ended_within(process: subprocess.Popen[str], seconds: float) -> float | None:
    began = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - began


def _started(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    assert process.stdout.readline() == "started\n"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (lambda: LockTarget(user="bob"), "user 'bob' is locked (incident 7): ask a tenant admin"),
        (
            lambda: LockTarget(node="web-1"),
            "node 'web-1' is locked (incident 7): ask a tenant admin",
        ),
        (
            lambda: LockTarget(role="oncall"),
            "role 'oncall' is locked (incident 7): ask a tenant admin",
        ),
    ],
    ids=["user-lock", "node-lock", "role-lock"],
)
def test_a_lock_ends_a_live_jump_ssh_session_within_5_s(
    site: Site, tmp_path: Path, target: Callable[[], LockTarget], expected: str
) -> None:
    with plane_of(site) as plane:
        plane.roles.create("acme", ONCALL)
    user = bob(site, tmp_path, ["oncall"])
    process = subprocess.Popen(
        [str(BIN / "jump"), "ssh", "web-1", "echo started; sleep 60"],
        env=user.shell.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _started(process)
        with plane_of(site) as plane:
            lock = plane.locks.create("acme", target(), message="incident 7")
        took = _ended_within(process, 5)
        assert took is not None, "the locked session still runs after 5 s"
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate(timeout=10)  # and its pipes closed
    assert "Traceback" not in err
    # One line says why: the node's, without jump's guess that the proxy or node closed it
    assert err == f"jumpgate: {expected}\n"
    ends = audit_events(site, "session.end", 1, where=lambda e: e.get("origin") == "proxy")
    assert [e.get("reason") for e in ends] == [f"locked: {expected}"]
    refused = user.jump_ssh("echo", "in")
    assert refused.stderr == f"jump: error: {expected}\n"
    with plane_of(site) as plane:
        plane.locks.remove("acme", lock.name)
    # Lifting the lock lets bob back: at once at the proxy, at the node with the proxy's next
    # reading of the locks (each second), which it pushes there.
    deadline = time.monotonic() + 5
    while (back := user.jump_ssh("echo", "in")).stdout != "in\n" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert back.stdout == "in\n", back.stderr


def test_a_nodes_tunnel_is_pushed_its_tenants_locks(site: Site) -> None:
    async def pushed() -> list[PolicyUpdate]:
        updates: list[PolicyUpdate] = []
        async with as_the_node(site) as conn:
            probe, welcome = await Probe.open(conn)
            assert welcome is not None
            assert welcome.type == "welcome"
            first = await probe.next_policy(timeout=10)
            assert isinstance(first, PolicyUpdate), first
            updates.append(first)
            with plane_of(site) as plane:
                plane.locks.create("acme", LockTarget(user="mallory"), message="m")
                plane.locks.create("globex", LockTarget(user="carol"), message="theirs")
            second = await probe.next_policy(timeout=10)
            assert isinstance(second, PolicyUpdate), second
            updates.append(second)
            await probe.close()
        return updates

    first, second = asyncio.run(asyncio.wait_for(pushed(), 60))
    assert first.locks == []
    assert [lock.spec.target.user for lock in second.locks] == ["mallory"]


def test_a_lock_ends_an_openssh_session_and_says_why(site: Site, tmp_path: Path) -> None:
    """Through ``jump config``'s ProxyCommand the proxy has the user's stderr: the lock's
    message is shown there when the proxy ends the session. The node, pushed the lock, ends
    it first as a rule (the proxy gives it ``NODE_GRACE_SECONDS``), writing the message on
    the session's stderr; either way the user reads it."""
    user = bob(site, tmp_path)
    process = subprocess.Popen(
        [
            "ssh",
            "-F",
            str(user.config),
            "-o",
            "BatchMode=yes",
            f"{LOGIN}@web-1.acme.localhost",
            "echo started; sleep 60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _started(process)
        with plane_of(site) as plane:
            plane.locks.create("acme", LockTarget(user="bob"), message="incident 8")
        took = _ended_within(process, 5)
        assert took is not None, "the locked session still runs after 5 s"
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate(timeout=10)
    message = "user 'bob' is locked (incident 8): ask a tenant admin"
    assert f"jumpgate proxy: {message}\n" in err or f"jumpgate: {message}\n" in err, err
    assert process.returncode == 255

"""The CLIs as a person drives them, against ``jumpgate start`` on free loopback ports."""

import re
from pathlib import Path

import pytest

from jumpgate.protocol import calls, models
from jumpgate.protocol.client import APIError, Client
from jumpgate.protocol.problems import MAX_BODY_BYTES
from tests.e2e.conftest import (
    PASSWORD,
    STATIC_TOKEN,
    Cluster,
    Shell,
    create_tenant,
    signup_and_login,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e


def test_operator_admin_and_user_flow(cluster: Cluster, tmp_path: Path) -> None:
    admin = Shell(tmp_path / "admin-home")
    data = ["--data-dir", str(cluster.data_dir)]
    created = admin.ok(
        "jumpgate",
        "tenants",
        "create",
        "acme",
        "--admin",
        "alice",
        "--logins",
        "root,ubuntu",
        "--format",
        "json",
        *data,
    ).json()
    assert isinstance(created, dict)
    assert created["tenant"] == "acme"
    assert created["ca_pin"].startswith("sha256:")
    listed = admin.ok("jumpgate", "tenants", "ls", "--format", "json", *data).json()
    assert [t["name"] for t in listed] == ["acme"]

    signup_and_login(admin, cluster, created["invite_token"], "alice")
    key = tmp_path / "admin-home" / "profiles" / f"acme.localhost_{cluster.port}" / "key"
    assert key.stat().st_mode & 0o777 == 0o600

    status = admin.ok("jumpctl", "status", "--format", "json").json()
    assert isinstance(status, dict)
    assert status["cluster_name"] == "acme"
    assert status["ca_pin"] == created["ca_pin"]
    assert [ca["key_type"] for ca in status["cas"]] == ["ed25519", "ed25519"]
    assert "CA pin   " + created["ca_pin"] in admin.ok("jumpctl", "status").out

    node = admin.ok("jumpctl", "nodes", "add", "--ttl", "5m", "--format", "json").json()
    assert isinstance(node, dict)
    assert set(node) >= {"token", "ca_pin", "expires", "command"}
    assert node["command"] == (
        f"JUMPGATE_TOKEN={node['token']} jumpgate start --services=node "
        f"--ca-pin={created['ca_pin']} --auth-server={cluster.proxy} --insecure"
    )
    assert node["env"] == {"JUMPGATE_TOKEN": node["token"]}
    assert not [arg for arg in node["argv"] if node["token"] in arg]
    extra = admin.ok(
        "jumpctl", "tokens", "add", "--type=node", "--ttl", "10m", "--format", "json"
    ).json()
    assert isinstance(extra, dict)
    tokens = admin.ok("jumpctl", "tokens", "ls", "--format", "json").json()
    assert [(t["token"], t["static"]) for t in tokens] == [
        (node["token"], False),
        (extra["token"], False),
        (STATIC_TOKEN, True),
    ]
    assert node["token"] in admin.ok("jumpctl", "tokens", "ls").out
    admin.ok("jumpctl", "tokens", "rm", node["token"])
    admin.ok("jumpctl", "tokens", "del", extra["token"])
    left = admin.ok("jumpctl", "tokens", "ls", "--format", "json").json()
    assert [t["token"] for t in left] == [STATIC_TOKEN]

    bob = admin.ok(
        "jumpctl", "users", "add", "bob", "--logins", "ubuntu", "--format", "json"
    ).json()
    assert isinstance(bob, dict)
    assert bob["user"] == "bob"
    users = admin.ok("jumpctl", "users", "ls", "--format", "json").json()
    assert [(u["name"], u["status"]) for u in users] == [("alice", "active"), ("bob", "invited")]

    engineer = Shell(tmp_path / "bob-home")
    signup_and_login(engineer, cluster, bob["invite_token"], "bob")
    me = engineer.ok("jump", "status", "--format", "json").json()
    assert isinstance(me, dict)
    assert (me["user"], me["cluster"], me["logins"], me["roles"]) == (
        "bob",
        "acme",
        ["ubuntu"],
        ["access"],
    )
    assert "Logged in as: bob" in engineer.ok("jump", "status").out
    refused = engineer.fails("jumpctl", "users", "ls")
    assert refused == "jumpctl: error: user 'bob' may not list user: ask a tenant admin"

    locked = admin.ok("jumpctl", "users", "lock", "bob", "--ttl", "5m").out
    shown = r"\(until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"
    assert re.match(rf"User 'bob' locked: .* {shown}\.\n", locked), locked
    assert re.search(rf"  locked: .* {shown}  ", admin.ok("jumpctl", "users", "ls").out)
    admin.ok("jumpctl", "users", "rm", "bob")
    assert engineer.fails("jumpctl", "status") == (
        "jumpctl: error: user 'bob' no longer exists: ask a tenant admin"
    )
    engineer.ok("jump", "logout")
    assert (
        engineer.fails("jump", "status")
        == "jump: error: not logged in: run jump login --proxy=CLUSTER:3080"
    )

    admin.ok("jumpgate", "tenants", "rm", "acme", *data)
    assert admin.ok("jumpgate", "tenants", "ls", "--format", "json", *data).json() == []


def _login_argv(proxy: str, otp: str, *, insecure: bool = True) -> list[str]:
    argv = [
        "jump",
        "login",
        f"--proxy={proxy}",
        "--user",
        "alice",
        "--password-stdin",
        "--otp",
        otp,
    ]
    return [*argv, "--insecure"] if insecure else argv


def test_bad_input_gets_one_line_errors(cluster: Cluster, tmp_path: Path) -> None:
    shell = Shell(tmp_path / "home")
    data = ["--data-dir", str(cluster.data_dir)]
    password = PASSWORD + "\n"
    assert shell.fails("jumpgate", "tenants", "create", "Not_A_Label", "--admin", "a", *data) == (
        "jumpgate: error: tenant name 'Not_A_Label' is not a DNS label: use lowercase letters, "
        "digits and '-', at most 63, not starting or ending with '-'"
    )
    create = ["jumpgate", "tenants", "create", "acme", "--admin", "alice", *data]
    created = shell.ok(*create, "--format", "json").json()
    assert (
        shell.fails(*create) == "jumpgate: error: tenant 'acme' exists already: pick another name"
    )
    proxy = cluster.proxy
    signup = ["jump", "signup", f"--proxy={proxy}", "--insecure", "--password-stdin"]
    assert (
        shell.fails(*signup, created["invite_token"], stdin="too short\n")
        == "jump: error: the password must be 12 to 128 characters (9 given): run jump signup again"
    )
    spent = signup_and_login(shell, cluster, created["invite_token"], "alice")
    cases = [
        (
            _login_argv(proxy, spent),
            "jump: error: one-time code already used: wait for the next code and try again",
        ),
        (
            _login_argv(proxy, "12345"),
            "jump: error: otp: must be the 6 digits your authenticator app shows, not '12345'",
        ),
        (
            _login_argv(f"nosuch.localhost:{cluster.port}", "123456"),
            "jump: error: no cluster named 'nosuch' is served here: check the cluster name in "
            "the address (clusters are NAME.<platform address>); ask your admin",
        ),
        (
            _login_argv(proxy, "123456", insecure=False),
            f"jump: error: cannot verify the HTTPS certificate of {proxy}: "
            "pass --insecure for a local self-signed platform",
        ),
        (
            [*_login_argv(proxy, "123456"), "--ttl", "5 minutes"],
            "jump: error: --ttl: invalid duration '5 minutes': "
            "use a number and a unit, e.g. 30s, 5m, 12h",
        ),
        (
            ["jumpctl", "tokens", "rm", "no-such-token-value"],
            "jumpctl: error: no such join token: see jumpctl tokens ls",
        ),
        (
            ["jumpctl", "users", "add", "Bad Name"],
            "jumpctl: error: name: user name 'Bad Name' is not valid: "
            "use lowercase letters, digits and . _ @ + -",
        ),
    ]
    for argv, message in cases:
        assert shell.fails(*argv, stdin=password) == message
    closed = f"acme.localhost:{free_port()}"
    assert shell.fails(*_login_argv(closed, "123456"), stdin=password).startswith(
        f"jump: error: cannot reach {closed} ("
    )
    # flags argparse refuses: one line too (exit 2), not the usage block
    for argv, message in [
        (
            ["jumpctl", "users", "lock", "bob", "--ttl", "5"],
            "jumpctl users lock: error: argument --ttl: invalid duration '5': use a number "
            "and a unit, e.g. 30s, 5m, 12h (see jumpctl users lock --help)",
        ),
        (["jump", "sssh"], "jump: error: argument command: invalid choice: 'sssh'"),
        (
            ["jumpgate", "start", "--bogus"],
            "jumpgate start: error: unrecognized arguments: --bogus",
        ),
    ]:
        refused = shell.run(*argv)
        assert refused.code == 2
        assert refused.err.count("\n") == 1
        assert refused.err.startswith(message)
    # a demo on a proxy-only config (the platform's functions) cannot make its tenant
    proxy_only = tmp_path / "proxy-only.yaml"
    proxy_only.write_text("roles: [proxy]\ncontrol_plane: {type: lambda, region: us-east-1}\n")
    refused = shell.run("jumpgate", "demo", "-c", str(proxy_only), "--data-dir", str(tmp_path))
    assert refused.code == 1
    assert refused.err == (
        "jumpgate: error: jumpgate demo runs the control plane itself: keep service auth "
        "(a proxy on the platform's functions is jumpgate start)\n"
    )


def test_the_address_is_checked_before_any_secret_is_asked(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Without a terminal a prompt is refused, so a command that got as far as asking for
    the password or the one-time code says so instead of what is wrong with the address."""
    shell = Shell(tmp_path / "home")
    create_tenant(shell, cluster, "acme", "alice")
    closed = f"acme.localhost:{free_port()}"
    wrong_address = [
        (
            [f"--proxy=nosuch.localhost:{cluster.port}", "--insecure"],
            "jump: error: no cluster named 'nosuch' is served here: check the cluster name in "
            "the address (clusters are NAME.<platform address>); ask your admin",
        ),
        (
            [f"--proxy={cluster.proxy}"],
            f"jump: error: cannot verify the HTTPS certificate of {cluster.proxy}: "
            "pass --insecure for a local self-signed platform",
        ),
        ([f"--proxy={closed}", "--insecure"], f"jump: error: cannot reach {closed} ("),
        (
            [f"--proxy=localhost:{cluster.port}", "--insecure"],
            f"jump: error: localhost:{cluster.port} names no cluster: use "
            f"--proxy=NAME.<platform address>, e.g. acme.localhost:{cluster.port}",
        ),
    ]
    for flags, message in wrong_address:
        for argv in (["jump", "login", *flags], ["jump", "signup", *flags, "x" * 20]):
            assert shell.fails(*argv, stdin="").startswith(message), argv
    asked = [
        (
            ["login", "--user", "alice"],
            "jump: error: the password is needed and there is no terminal: "
            "pass it with --password-stdin",
        ),
        (
            ["login", "--user", "alice", "--password-stdin"],
            "jump: error: the one-time code is needed and there is no terminal: pass it with --otp",
        ),
        (
            ["signup", "x" * 20],
            "jump: error: the password is needed and there is no terminal: "
            "pass it with --password-stdin",
        ),
    ]
    for argv, message in asked:
        full = ["jump", *argv, f"--proxy={cluster.proxy}", "--insecure"]
        assert shell.fails(*full, stdin=PASSWORD + "\n") == message


def test_operator_commands_create_no_platform_where_there_is_none(tmp_path: Path) -> None:
    """Only jumpgate start and tenants create make a platform's state (master key, stores);
    the other operator commands on a data dir without it say where it may be instead."""
    shell = Shell(tmp_path / "home")
    empty = tmp_path / "empty"
    empty.mkdir()
    for data_dir in (tmp_path / "nowhere", empty):
        for argv in (["tenants", "ls"], ["tenants", "rm", "acme"]):
            assert shell.fails("jumpgate", *argv, "--data-dir", str(data_dir)) == (
                f"jumpgate: error: no platform data in {data_dir}: pass --data-dir "
                "(make up keeps the demo's in .jumpgate-demo)"
            )
    assert not (tmp_path / "nowhere").exists()
    assert list(empty.iterdir()) == []
    fresh = ["--data-dir", str(tmp_path / "fresh")]
    shell.ok("jumpgate", "tenants", "create", "acme", "--admin", "alice", *fresh)
    listed = shell.ok("jumpgate", "tenants", "ls", "--format", "json", *fresh).json()
    assert [t["name"] for t in listed] == ["acme"]


def test_other_tenants_credentials_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    acme_admin = Shell(tmp_path / "acme-home")
    acme = create_tenant(acme_admin, cluster, "acme", "alice")
    globex_admin = Shell(tmp_path / "globex-home")
    globex = create_tenant(globex_admin, cluster, "globex", "gina")
    assert isinstance(acme, dict)
    assert isinstance(globex, dict)
    signup_and_login(acme_admin, cluster, acme["invite_token"], "alice")
    proxy = f"globex.localhost:{cluster.port}"
    globex_admin.ok(
        "jump",
        "signup",
        f"--proxy={proxy}",
        "--insecure",
        "--password-stdin",
        globex["invite_token"],
        stdin=PASSWORD + "\n",
    )
    error = acme_admin.fails("jumpctl", "--auth-server", proxy, "users", "ls")
    assert (
        error
        == "jumpctl: error: certificate was not issued by this cluster: run jump login against it"
    )
    assert "gina" not in error


def test_version_and_oversized_body_through_https(cluster: Cluster, tmp_path: Path) -> None:
    shell = Shell(tmp_path / "home")
    version = shell.ok("jumpgate", "version", "--format", "json").json()
    assert isinstance(version, dict)
    assert version["protocol"] == "1"
    assert shell.ok("jumpgate", "version").out.startswith("jumpgate ")
    create_tenant(shell, cluster, "acme", "alice")
    # A body no model allows (what another client might send): built unchecked
    oversized = models.SignupRequest.model_construct(
        token="x" * 16, password="p" * (MAX_BODY_BYTES + 1)
    )
    with Client(cluster.proxy, insecure=True) as client:
        with pytest.raises(APIError) as raised:
            client.send(calls.signup(oversized))
        assert raised.value.status == 413
        assert raised.value.problem_type == "urn:jumpgate:problem:body-too-large"
        assert client.send(calls.ping()).cluster_name == "acme"


def test_sigterm_stops_the_daemon_cleanly(cluster: Cluster) -> None:
    assert cluster.stop() == 0
    log = cluster.log.read_text()
    assert '"message": "stopped"' in log
    assert "Traceback" not in log

"""``jumpctl audit search`` against a running platform, and what a file sink receives."""

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Cluster, Shell, create_tenant, signup_and_login

pytestmark = pytest.mark.e2e


def test_admin_searches_the_audit_log(cluster: Cluster, tmp_path: Path) -> None:
    admin = Shell(tmp_path / "home")
    created = create_tenant(admin, cluster, "acme", "alice", "root")
    signup_and_login(admin, cluster, created["invite_token"], "alice")
    admin.ok("jumpctl", "tokens", "add", "--type", "node", "--ttl", "5m")

    everything = admin.ok("jumpctl", "audit", "search", "--format", "json", "--order", "asc")
    types = [e["type"] for e in everything.json()]
    assert types == ["tenant.create", "user.create", "user.signup", "user.login", "token.create"]
    assert everything.json()[0]["user"].startswith("operator:")

    logins = admin.ok("jumpctl", "audit", "search", "--type", "user.login", "--user", "alice")
    lines = logins.out.splitlines()
    assert lines[0].split() == ["Time", "Type", "Code", "User", "Details"]
    assert len(lines) == 3
    assert "user.login" in lines[2]
    assert "J1000I" in lines[2]
    assert "method=password+totp" in lines[2]

    limited = admin.run("jumpctl", "audit", "search", "--limit", "2", "--format", "json")
    assert len(json.loads(limited.out)) == 2
    assert limited.err == (
        "jumpctl: more events match than --limit 2: raise it or narrow the search\n"
    )
    assert (
        admin.ok("jumpctl", "audit", "search", "--from", "1h", "--to", "30m").out.count("\n") == 2
    )  # the header only: nothing happened an hour ago

    assert admin.fails("jumpctl", "audit", "search", "--from", "yesterday") == (
        "jumpctl: error: 'yesterday' is not a time: use e.g. 2026-11-21, 2026-11-21T09:30 "
        "or 2h (ago)"
    )
    assert admin.fails("jumpctl", "audit", "search", "--type", "nope") == (
        "jumpctl: error: unknown event type 'nope': see jumpctl audit search --help for types"
    )
    assert admin.fails("jumpctl", "audit", "search", "--from", "1h", "--to", "2h") == (
        "jumpctl: error: --from must be before --to"
    )

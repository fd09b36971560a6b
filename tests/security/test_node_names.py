"""Node names users type, through the real proxy: a huge one, and FQDNs with a trailing dot.

Issue 14, item 6: a 100,000-character node name was echoed back whole in the refusal, and
``web-1.acme.localhost.`` (a fully qualified name, as DNS writes it) was not found, by
``jump ssh``, ``ssh -J`` and the ``-s proxy:%h:%p`` ProxyCommand alike.
"""

import subprocess

import pytest

from tests.e2e.conftest import BIN, LOGIN, Site

pytestmark = [pytest.mark.e2e, pytest.mark.net]

FQDN = "web-1.acme.localhost."


def _jump_ssh(site: Site, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "jump"), "ssh", *argv],
        env=site.admin.env,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_a_huge_node_name_is_not_echoed_back_whole(site: Site) -> None:
    name = "x" * 100_000
    refused = _jump_ssh(site, name, "true")
    assert refused.returncode == 1
    assert len(refused.stderr) < 300, refused.stderr[:300]
    assert refused.stderr == (
        b"jump: error: node '" + b"x" * 64 + "…".encode() + b"' is not online in cluster "
        b"'acme': see jump ls\n"
    )
    # OpenSSH's ssh -J refuses so long a name itself; its ProxyCommand form reaches the proxy
    subsystem = subprocess.run(
        ["ssh", "-F", str(site.ssh_config), "jg-proxy", "-s", f"proxy:{name}:22"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert subsystem.returncode == 1
    assert subsystem.stderr == (
        b"jumpgate proxy: node '" + b"x" * 64 + "…".encode() + b"' is not online in cluster "
        b"'acme': see jump ls\n"
    )


@pytest.mark.parametrize("route", ["jump-ssh", "proxy-jump", "proxy-command"])
def test_a_trailing_dot_fqdn_reaches_the_node(site: Site, route: str) -> None:
    if route == "jump-ssh":
        done = _jump_ssh(site, FQDN, "echo", "dot")
    elif route == "proxy-jump":
        done = site.ssh("-o", "HostKeyAlias=web-1", "echo dot", host=FQDN)
    else:
        proxy_command = f"ssh -F {site.ssh_config} jg-proxy -s proxy:%h:%p"
        done = site.ssh(
            "-o",
            f"ProxyCommand={proxy_command}",
            "-o",
            "HostKeyAlias=web-1",
            "-l",
            LOGIN,
            "echo dot",
            host=FQDN,
        )
    assert (done.returncode, done.stdout) == (0, b"dot\n"), done.stderr.decode()[-500:]

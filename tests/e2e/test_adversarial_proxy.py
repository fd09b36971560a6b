"""Attacks on the proxy's audit of refused logins (issue 16's adversarial review)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import LOGIN, Site, audit_events

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def test_a_certificate_shown_but_never_used_is_not_audited_as_refused(
    site: Site, tmp_path: Path
) -> None:
    """OpenSSH first asks whether a key would do (a public key query, no signature), and
    the proxy's ``validate_ca_key`` takes the tenant from the certificate alone. A client
    that then never signs (its key's passphrase not typed; or anyone holding only the
    public certificate, which is no secret) was written into the tenant's audit as a
    certificate refused for a login it allows: a false record, at anyone's will."""
    profile = next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())
    mine = tmp_path / "shown"  # tmp_path is the site's too
    mine.mkdir()
    key = mine / "locked"
    shutil.copy(profile / "key", key)
    shutil.copy(profile / "key-cert.pub", mine / "locked-cert.pub")
    key.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", "not typed", "-f", str(key)], check=True
    )
    config = mine / "ssh_config"
    config.write_text(
        site.ssh_config.read_text()
        .replace(str(profile / "key-cert.pub"), str(mine / "locked-cert.pub"))
        .replace(f"IdentityFile {profile / 'key'}", f"IdentityFile {key}")
    )
    shown = subprocess.run(
        ["ssh", "-F", str(config), "jg-proxy", "true"],
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert shown.returncode == 255, shown.stderr
    assert site.ssh("true").returncode == 0  # the certificate does allow the login
    refused = [e for e in audit_events(site, "auth", 1, seconds=3) if e.get("origin") == "proxy"]
    assert [e for e in refused if e["login"] == LOGIN and not e["success"]] == [], refused

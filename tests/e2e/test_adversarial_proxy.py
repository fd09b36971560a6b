"""Attacks on the proxy's audit of refused logins (issue 16's adversarial review)."""

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from jumpgate.protocol import certs
from tests.e2e.conftest import LOGIN, Site, audit_events
from tests.e2e.test_access_at_proxy import plane_of

pytestmark = [pytest.mark.e2e, pytest.mark.net]


def _shown_only(site: Site, directory: Path) -> tuple[Path, Path]:
    """A copy of the admin's key and certificate whose key's passphrase is never typed: the
    client shows the certificate and cannot sign. (key, certificate)"""
    profile = next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())
    directory.mkdir()
    key = directory / "locked"
    shutil.copy(profile / "key", key)
    shutil.copy(profile / "key-cert.pub", directory / "locked-cert.pub")
    key.chmod(0o600)
    subprocess.run(
        ["ssh-keygen", "-q", "-p", "-P", "", "-N", "not typed", "-f", str(key)], check=True
    )
    return key, directory / "locked-cert.pub"


def _refused_certificate(site: Site, directory: Path) -> tuple[Path, Path]:
    """A key and a certificate of acme's user CA for another login than ``LOGIN`` (asyncssh
    refuses it for ``LOGIN``). (key, certificate)"""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = directory / "other"
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    with plane_of(site) as plane:
        ca = plane.authorities.get("acme", "user")
        cert, _ = ca.sign_user(
            certs.load_public_key(key.export_public_key().decode()),
            tenant="acme",
            user="alice",
            user_id="u-alice",
            roles=["access"],
            logins=["not-" + LOGIN],
            now=datetime.now(UTC),
            ttl=timedelta(minutes=5),
        )
    (directory / "other-cert.pub").write_text(cert + "\n")
    return path, directory / "other-cert.pub"


def _openssh_with(site: Site, directory: Path, *identities: tuple[Path, Path]) -> int:
    """``ssh jg-proxy true`` offering ``identities`` in turn, and nothing else."""
    profile = next((Path(site.admin.env["JUMPGATE_HOME"]) / "profiles").iterdir())
    lines = site.ssh_config.read_text().splitlines()
    lines = [
        line for line in lines if not line.strip().startswith(("IdentityFile", "CertificateFile"))
    ]
    at = lines.index("Host *") + 1
    for key, cert in reversed(identities):
        lines[at:at] = [f"  IdentityFile {key}", f"  CertificateFile {cert}"]
    config = directory / "ssh_config"
    config.write_text("\n".join(lines) + "\n")
    assert str(profile / "key") not in config.read_text()
    shown = subprocess.run(
        ["ssh", "-F", str(config), "jg-proxy", "true"],
        capture_output=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return shown.returncode


def _refused_for_login(site: Site, seconds: float) -> list[dict[str, object]]:
    found = audit_events(site, "auth", 1, seconds, where=lambda e: e.get("origin") == "proxy")
    return [e for e in found if e["login"] == LOGIN and not e["success"]]


def test_a_certificate_shown_but_never_used_is_not_audited_as_refused(
    site: Site, tmp_path: Path
) -> None:
    """OpenSSH first asks whether a key would do (a public key query, no signature), and
    the proxy's ``validate_ca_key`` takes the tenant from the certificate alone. A client
    that then never signs (its key's passphrase not typed; or anyone holding only the
    public certificate, which is no secret) was written into the tenant's audit as a
    certificate refused for a login it allows: a false record, at anyone's will."""
    mine = tmp_path / "shown"  # tmp_path is the site's too
    shown = _shown_only(site, mine)
    assert _openssh_with(site, mine, shown) == 255
    assert site.ssh("true").returncode == 0  # the certificate does allow the login
    assert _refused_for_login(site, 3) == []


def test_a_refused_certificate_is_audited_even_after_one_shown_that_passed(
    site: Site, tmp_path: Path
) -> None:
    """A certificate that passed but was never signed with must not hide one refused on
    the same connection (anyone holding a tenant's public certificate could otherwise try
    expired or wrong-login certificates after it, unrecorded)."""
    mine = tmp_path / "shown"
    shown = _shown_only(site, mine)
    refused = _refused_certificate(site, mine)
    assert _openssh_with(site, mine, shown, refused) == 255
    [event] = _refused_for_login(site, 15)
    assert event["code"] == "J3007W"

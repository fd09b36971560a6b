"""Certificates from Jumpgate work with plain OpenSSH (Debian's ssh and sshd on 127.0.0.1).

The user certificate a login returns is accepted by an ``sshd`` that trusts only the tenant's
exported user CA; the host certificate a join returns is accepted by an ``ssh`` client that
trusts only the tenant's host CA through a ``@cert-authority`` line.
"""

import getpass
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.secrets import MasterKey, SecretBox
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.protocol import certs
from tests.support import free_port

pytestmark = pytest.mark.net
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
LOGIN = getpass.getuser()
PASSWORD = "correct horse battery staple"


@dataclass
class Login:
    key_path: Path
    cert_path: Path
    certificate: str


@dataclass
class Sshd:
    port: int
    host_ca: str
    directory: Path


def _write_key(path: Path, key: ed25519.Ed25519PrivateKey) -> None:
    path.write_bytes(certs.openssh_private(key))
    path.chmod(0o600)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    store = SQLiteStore(tmp_path / "state.db")
    box = SecretBox(MasterKey.from_bytes(secrets.token_bytes(32)))
    audit = SQLiteAuditStore(tmp_path / "audit.db")
    recordings = LocalRecordingStore(tmp_path / "recordings")
    yield ControlPlane(
        store, box, audit=audit, recordings=recordings, settings=Settings(bcrypt_rounds=4)
    )
    store.close()


def _login(plane: ControlPlane, tenant: str, directory: Path, logins: list[str]) -> Login:
    """Invite alice to ``tenant`` (created if new), sign her up, log in; key and cert on disk."""
    if tenant not in {t.name for t in plane.tenants.list()}:
        plane.tenants.create(tenant, admin="first-admin", logins=["root"])
    # the access role grants the user's logins as principals (a user with no role gets none)
    invite = plane.users.add(tenant, "alice", logins=logins, roles=["access"])
    enrolment = plane.users.signup(tenant, invite.token, PASSWORD)
    key = ed25519.Ed25519PrivateKey.generate()
    issued = plane.login.login(
        tenant,
        user="alice",
        password=PASSWORD,
        otp=pyotp.TOTP(enrolment.totp_secret).now(),
        public_key=certs.openssh_public(key.public_key()),
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "key", directory / "key-cert.pub"
    _write_key(key_path, key)
    cert_path.write_text(issued.certificate + "\n")
    return Login(key_path, cert_path, issued.certificate)


@pytest.fixture
def sshd(plane: ControlPlane, tmp_path: Path) -> Iterator[Sshd]:
    """sshd trusting tenant acme's user CA, presenting a host certificate from a join."""
    if not Path(SSHD).exists():
        pytest.fail("OpenSSH sshd is missing: run make test, which installs openssh-server")
    directory = tmp_path / "sshd"
    directory.mkdir()
    plane.tenants.create("acme", admin="root-admin", logins=["root"])
    user_ca, host_ca = plane.authorities.public_keys("acme")
    (directory / "user_ca.pub").write_text(user_ca + "\n")
    host_key = ed25519.Ed25519PrivateKey.generate()
    _write_key(directory / "host_key", host_key)
    token = plane.tokens.create("acme", system_roles=["node"], ttl=timedelta(minutes=5))
    joined = plane.tokens.join(
        "acme",
        token=token.token,
        public_key=certs.openssh_public(host_key.public_key()),
        nodename="web-1",
    )
    (directory / "host_key-cert.pub").write_text(joined.certificate + "\n")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {directory / 'host_key'}",
                f"HostCertificate {directory / 'host_key-cert.pub'}",
                f"PidFile {directory / 'sshd.pid'}",
                f"TrustedUserCAKeys {directory / 'user_ca.pub'}",
                "AuthorizedKeysFile none",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "UsePAM no",
                "StrictModes no",
                "SetEnv SHLVL=1",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (directory / "sshd.log").open("w")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"sshd exited: {(directory / 'sshd.log').read_text()}")
            time.sleep(0.05)
    yield Sshd(port, host_ca, directory)
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _ssh(
    sshd: Sshd, login: Login, user: str, known_hosts: Path | None = None
) -> subprocess.CompletedProcess[str]:
    host_checking = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    if known_hosts is not None:
        host_checking = [
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "HostKeyAlias=web-1",
        ]
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(login.key_path),
            "-o",
            f"CertificateFile={login.cert_path}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            *host_checking,
            "-p",
            str(sshd.port),
            f"{user}@127.0.0.1",
            "echo jumpgate-ok",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sshd_accepts_login_certificate(plane: ControlPlane, sshd: Sshd, tmp_path: Path) -> None:
    login = _login(plane, "acme", tmp_path / "alice", [LOGIN])
    result = _ssh(sshd, login, LOGIN)
    assert result.returncode == 0, result.stderr + (sshd.directory / "sshd.log").read_text()
    assert result.stdout.strip() == "jumpgate-ok"


def test_ssh_client_trusts_host_certificate_through_cert_authority(
    plane: ControlPlane, sshd: Sshd, tmp_path: Path
) -> None:
    login = _login(plane, "acme", tmp_path / "alice", [LOGIN])
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@cert-authority web-1 {sshd.host_ca}\n")
    result = _ssh(sshd, login, LOGIN, known_hosts)
    assert result.returncode == 0, result.stderr
    other_ca = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    known_hosts.write_text(f"@cert-authority web-1 {other_ca}\n")
    refused = _ssh(sshd, login, LOGIN, known_hosts)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr


def test_sshd_refuses_other_tenants_certificate(
    plane: ControlPlane, sshd: Sshd, tmp_path: Path
) -> None:
    login = _login(plane, "globex", tmp_path / "globex", [LOGIN])
    result = _ssh(sshd, login, LOGIN)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_sshd_refuses_login_that_is_not_a_principal(
    plane: ControlPlane, sshd: Sshd, tmp_path: Path
) -> None:
    login = _login(plane, "acme", tmp_path / "alice", ["someone-else"])
    result = _ssh(sshd, login, LOGIN)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256", "rsa-3072"])
def test_ssh_keygen_reads_certificate_of_every_ca_type(
    plane: ControlPlane, tmp_path: Path, key_type: str
) -> None:
    plane.tenants.create("typed", admin="first-admin", key_type=certs.KeyType(key_type), logins=[])
    path = _login(plane, "typed", tmp_path / "alice", ["root"]).cert_path
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "user certificate" in listing
    assert 'Key ID: "alice@typed"' in listing
    expected_ca = {"ed25519": "ED25519", "ecdsa-p256": "ECDSA", "rsa-3072": "RSA"}[key_type]
    assert f"Signing CA: {expected_ca}" in listing
    if key_type == "rsa-3072":
        assert "rsa-sha2-512" in listing
    for name in ("jumpgate-user", "jumpgate-roles", "jumpgate-tenant", "permit-pty"):
        assert name in listing

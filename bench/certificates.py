"""Certificates issued per second on one core through the issuing path, against the floor.

The issuing path is ``LoginService.issue``: the cached, unsealed tenant CA, the user's
principals and six extensions, encoding and the signature. The floor is the bare signature
of a certificate-sized message with the CA key: no path can beat it. For comparison,
cryptography's ``SSHCertificateBuilder`` signs the same certificate (docs/decisions/0003).
All run in this process, one after the other, on one thread. Target: >= 10,000/s, Ed25519.
"""

import argparse
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from jumpgate.control_plane.audit.sqlite import SQLiteAuditStore
from jumpgate.control_plane.plane import ControlPlane, Settings
from jumpgate.control_plane.recordings.local import LocalRecordingStore
from jumpgate.control_plane.secrets import MasterKey, SecretBox
from jumpgate.control_plane.store.sqlite import SQLiteStore
from jumpgate.protocol.certs import KeyType

TARGET_PER_SECOND = 10_000


def _rate(function: object, count: int) -> float:
    assert callable(function)
    for _ in range(min(200, count)):
        function()
    start = time.perf_counter()
    for _ in range(count):
        function()
    return count / (time.perf_counter() - start)


def measure(key_type: KeyType, count: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "state.db")
        box = SecretBox(MasterKey.from_bytes(secrets.token_bytes(32)))
        audit = SQLiteAuditStore(Path(directory) / "audit.db")
        recordings = LocalRecordingStore(Path(directory) / "recordings")
        plane = ControlPlane(
            store, box, audit=audit, recordings=recordings, settings=Settings(bcrypt_rounds=4)
        )
        plane.tenants.create("bench", admin="alice", logins=["root", "ubuntu"], key_type=key_type)
        record, _ = plane.users.get("bench", "alice")
        user_key = ed25519.Ed25519PrivateKey.generate().public_key()
        now = datetime.now(UTC)

        def issue() -> None:
            plane.login.issue("bench", record, user_key, ttl=timedelta(hours=12), now=now)

        path = _rate(issue, count)
        ca_key = plane.authorities.get("bench", "user").private_key
        after, before = int(now.timestamp()) - 60, int(now.timestamp()) + 43200

        def with_builder() -> None:
            (
                SSHCertificateBuilder()
                .public_key(user_key)
                .serial(secrets.randbits(64))
                .type(SSHCertificateType.USER)
                .key_id(b"alice@bench")
                .valid_principals([b"root", b"ubuntu"])
                .valid_after(after)
                .valid_before(before)
                .add_extension(b"permit-agent-forwarding", b"")
                .add_extension(b"permit-port-forwarding", b"")
                .add_extension(b"permit-pty", b"")
                .add_extension(b"jumpgate-user", b"alice")
                .add_extension(b"jumpgate-roles", b"access,admin")
                .add_extension(b"jumpgate-tenant", b"bench")
                .sign(ca_key)
                .public_bytes()
            )

        builder = _rate(with_builder, count)
        message = secrets.token_bytes(400)  # about a user certificate's signed body
        sign = plane.authorities.get("bench", "user")._signer._signature
        bare = _rate(lambda: sign(message), count)
        store.close()
        return path, bare, builder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="certificates per measurement")
    args = parser.parse_args()
    print(f"certificate issuance, one thread, {args.count} certificates each")
    print(
        f"{'CA key':<12}{'issuing path/s':>16}{'signature floor/s':>19}{'path/floor':>12}"
        f"{'builder/s':>11}{'path/builder':>14}"
    )
    ok = True
    for key_type in KeyType:
        count = args.count if key_type is not KeyType.RSA_3072 else max(200, args.count // 20)
        path, bare, builder = measure(key_type, count)
        print(
            f"{key_type.value:<12}{path:>16,.0f}{bare:>19,.0f}{path / bare:>12.2f}"
            f"{builder:>11,.0f}{path / builder:>14.2f}"
        )
        if key_type is KeyType.ED25519:
            ok = path >= TARGET_PER_SECOND
    verdict = "meets" if ok else "MISSES"
    print(f"Ed25519 issuing path {verdict} the target of {TARGET_PER_SECOND:,}/s per core")
    return 0


if __name__ == "__main__":
    sys.exit(main())

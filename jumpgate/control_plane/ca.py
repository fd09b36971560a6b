"""A tenant's certificate authorities and the certificates they sign.

Each tenant has a user CA (signs engineers' certificates) and a host CA (signs nodes'), with
separate keys. A CA is a set of keys (decision 0022): the *active* key signs, and every key of
its *trusted* set (the active one included) is accepted when verifying, so a rotation can
bring a new key in while certificates of the old one still work. Private keys are sealed
with the platform master key before they reach the store. Certificates are encoded by
``sshcert`` (asyncssh cannot write custom extensions, and cryptography's builder is too slow
for the issuing target); asyncssh and OpenSSH accept them.
"""

import base64
import dataclasses
import functools
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from jumpgate.control_plane import keys
from jumpgate.control_plane.errors import UnknownTenant
from jumpgate.control_plane.records import CARecord, update
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.sshcert import CertType, Signer
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import KeyNotFound
from jumpgate.protocol import certs, trust
from jumpgate.protocol.certs import KeyType

CAKind = Literal["user", "host", "proxy"]
"""A tenant's ``user`` and ``host`` CAs; the platform's ``proxy`` CA (proxy peering)."""
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_KINDS: tuple[CAKind, ...] = ("user", "host")
_STORED_KINDS: tuple[CAKind, ...] = (*_KINDS, "proxy")


class RotationPhase(StrEnum):
    """Where a CA stands in a rotation. Only ``standby`` (no rotation under way) exists until
    rotation is built; decision 0022 lists the phases foreseen, after Teleport's."""

    STANDBY = "standby"


BACKDATE = timedelta(minutes=1)
"""Certificates start a minute early so a client whose clock lags can use them at once."""


def generate_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of the chosen algorithm."""
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@dataclass(frozen=True)
class CertificateAuthority:
    """One CA, unsealed in memory: its active key pair and the other keys it trusts."""

    kind: CAKind
    key_type: KeyType  # of the active key
    private_key: PrivateKey  # the active key: everything this CA signs, it signs with it
    trusted: tuple[str, ...] = ()  # public keys also accepted when verifying (the active is)
    phase: RotationPhase = RotationPhase.STANDBY

    @functools.cached_property
    def public_key(self) -> str:
        """The active public key in OpenSSH form (what signs, and what the pin names)."""
        return certs.openssh_public(self.private_key.public_key())

    @property
    def trusted_keys(self) -> list[str]:
        """Every public key accepted when verifying, the active one first, each once (what
        ``TrustedUserCAKeys`` lists, and the trust document)."""
        keys_: list[str] = [self.public_key]
        for key in self.trusted:
            if not certs.is_trusted(key, keys_):
                keys_.append(key.strip())
        return keys_

    @functools.cached_property
    def _signer(self) -> Signer:
        return Signer(self.private_key)

    def sign_user(
        self,
        public_key: certs.PublicKey,
        *,
        tenant: str,
        user: str,
        user_id: str,
        roles: Sequence[str],
        logins: Sequence[str],
        now: datetime,
        ttl: timedelta,
        traits: Mapping[str, Sequence[str]] | None = None,
        port_forwarding: bool = True,
        agent_forwarding: bool = True,
    ) -> tuple[str, datetime]:
        """An SSH user certificate and its expiry.

        ``logins`` are the principals (what the roles grant); the permit extensions follow
        the roles' options. The traits and the expiry are repeated as extensions so a node
        can decide again from the certificate alone (docs/decisions/0034).

        A certificate with no principals is valid for *every* login in OpenSSH, so a user
        without logins gets a placeholder principal that matches none.
        """
        assert self.kind == "user"
        principals = list(logins) or [f"-jumpgate-nologin-{secrets.token_hex(8)}"]
        valid_before = (now + ttl).replace(microsecond=0)
        permits = {certs.PERMIT_PTY: ""}
        if agent_forwarding:
            permits[certs.PERMIT_AGENT_FORWARDING] = ""
        if port_forwarding:
            permits[certs.PERMIT_PORT_FORWARDING] = ""
        shown_traits = {name: list(values) for name, values in (traits or {}).items()}
        certificate = self._signer.certify(
            public_key,
            cert_type=CertType.USER,
            key_id=f"{user}@{tenant}",
            principals=principals,
            valid_after=int((now - BACKDATE).timestamp()),
            valid_before=int(valid_before.timestamp()),
            extensions={
                **permits,
                certs.EXT_USER: user,
                certs.EXT_USER_ID: user_id,
                certs.EXT_ROLES: ",".join(roles),
                certs.EXT_TENANT: tenant,
                certs.EXT_TRAITS: json.dumps(shown_traits, separators=(",", ":")),
                certs.EXT_VALID_BEFORE: str(int(valid_before.timestamp())),
            },
        )
        return certificate, valid_before

    def sign_host(
        self,
        public_key: certs.PublicKey,
        *,
        tenant: str,
        host_id: str,
        nodename: str,
        now: datetime,
        public_addr: str | None = None,
        ttl: timedelta = timedelta(seconds=certs.HOST_CERT_TTL_SECONDS),
    ) -> str:
        """An SSH host certificate for a node: uuid, ``<uuid>.<tenant>`` and its name.

        With ``public_addr`` it also names ``<name>.<tenant>.<public_addr>`` (both for the
        uuid and the name), so ``ssh web-1.acme.example.sh`` checks out in plain OpenSSH.
        """
        assert self.kind == "host"
        principals = [host_id, f"{host_id}.{tenant}", nodename]
        if public_addr:
            principals += [
                f"{nodename}.{tenant}.{public_addr}",
                f"{host_id}.{tenant}.{public_addr}",
            ]
        return self._signer.certify(
            public_key,
            cert_type=CertType.HOST,
            key_id=f"{host_id}.{tenant}",
            principals=principals,
            valid_after=int((now - BACKDATE).timestamp()),
            valid_before=int((now + ttl).timestamp()),
        )

    def sign_trust(self, document: trust.TrustDocument) -> trust.SignedTrust:
        """The document signed with this host CA, as nodes verify it (``protocol.trust``):
        what a node trusts is vouched for by the key its pin names, whatever TLS says."""
        assert self.kind == "host"
        payload = trust.canonical(document)
        data = trust.signed_bytes(payload)
        key = self.private_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            signature = key.sign(data)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(data, ec.ECDSA(trust.ecdsa_hash(key.public_key())))
        else:
            signature = key.sign(data, padding.PKCS1v15(), trust.RSA_HASH())
        return trust.SignedTrust(
            payload=base64.b64encode(payload).decode(),
            signature=base64.b64encode(signature).decode(),
            signer=self.public_key,
        )

    def sign_proxy(
        self, public_key: certs.PublicKey, *, proxy_id: str, now: datetime, ttl: timedelta
    ) -> tuple[str, str, datetime]:
        """A proxy's peering certificates for its key, host and user, both naming
        ``proxy_id``, and their expiry. The user certificate permits port forwarding: a relay
        is a ``direct-tcpip`` channel, which asyncssh grants only with it."""
        assert self.kind == "proxy"
        valid_before = (now + ttl).replace(microsecond=0)

        def certificate(cert_type: CertType, extensions: dict[str, str] | None) -> str:
            return self._signer.certify(
                public_key,
                cert_type=cert_type,
                key_id=f"proxy {proxy_id}",
                principals=[proxy_id],
                valid_after=int((now - BACKDATE).timestamp()),
                valid_before=int(valid_before.timestamp()),
                extensions=extensions,
            )

        host = certificate(CertType.HOST, None)
        user = certificate(CertType.USER, {certs.PERMIT_PORT_FORWARDING: ""})
        return host, user, valid_before

    def to_record(self, box: SecretBox, *, tenant: str) -> bytes:
        """The stored form (``records.CARecord``): public keys in clear, private key sealed."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return CARecord(
            kind=self.kind,
            key_type=self.key_type.value,
            public_key=self.public_key,
            private_key=box.seal(pem, context=_context(tenant, self.kind)),
            trusted_keys=self.trusted_keys,
            rotation_phase=self.phase.value,
        ).to_bytes()

    @classmethod
    def from_record(cls, raw: bytes, box: SecretBox, *, tenant: str) -> "CertificateAuthority":
        """Unseal a stored CA; a record from before key sets trusts its one key."""
        record = CARecord.from_bytes(raw)
        kind = _kind(record.kind)
        pem = box.open(record.private_key, context=_context(tenant, kind))
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(
            key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        )
        return cls(
            kind,
            KeyType(record.key_type),
            key,
            trusted=tuple(record.trusted_keys),
            phase=RotationPhase(record.rotation_phase),
        )

    def with_active(self, key: PrivateKey, key_type: KeyType) -> "CertificateAuthority":
        """This CA signing with ``key`` from now on and still trusting every key it trusted."""
        return CertificateAuthority(
            self.kind, key_type, key, trusted=tuple(self.trusted_keys), phase=self.phase
        )


def _kind(text: str) -> CAKind:
    for kind in _STORED_KINDS:
        if text == kind:
            return kind
    raise ValueError(f"stored CA of unknown kind {text!r}")


def _context(tenant: str, kind: CAKind) -> str:
    return f"{tenant}/{keys.ca(kind)}/private_key"


def new_authorities(key_type: KeyType) -> dict[CAKind, CertificateAuthority]:
    """A new tenant's user and host CAs."""
    return {
        "user": CertificateAuthority("user", key_type, generate_key(key_type)),
        "host": CertificateAuthority("host", key_type, generate_key(key_type)),
    }


class Authorities:
    """Loads tenants' CAs from the store and keeps them unsealed for a short while.

    Unsealing costs an AES-GCM open and a PEM parse; caching for ``cache_seconds`` keeps
    certificate issuance fast. ``activate`` forgets the tenant in this process; another
    process (a Lambda instance) sees a new key within ``cache_seconds``.
    """

    def __init__(self, store: Store, box: SecretBox, *, cache_seconds: float = 10.0) -> None:
        self._store = store
        self._box = box
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, CAKind], tuple[float, CertificateAuthority]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, kind: CAKind) -> CertificateAuthority:
        """The tenant's CA of ``kind``; ``UnknownTenant`` if it has none."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((tenant, kind))
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            raw = self._store.get(tenant, keys.ca(kind)).value
        except KeyNotFound as exc:
            raise UnknownTenant.named(tenant) from exc
        authority = CertificateAuthority.from_record(raw, self._box, tenant=tenant)
        with self._lock:
            self._cache[(tenant, kind)] = (now, authority)
        return authority

    def forget(self, tenant: str) -> None:
        """Drop a tenant's cached CAs (after removal or rotation)."""
        with self._lock:
            for kind in _KINDS:
                self._cache.pop((tenant, kind), None)

    def trust_document(
        self,
        tenant: str,
        *,
        proxy_host_keys: Sequence[str],
        tunnel_public_addr: str,
        ssh_public_addr: str,
        now: datetime,
        nonce: str = "",
        web_certificate_sha256: Sequence[str] = (),
    ) -> trust.SignedTrust:
        """What the tenant's nodes trust, signed by its host CA (``protocol.trust``); the
        digests of the proxies' self-signed web certificates bind an ``--insecure`` agent's
        HTTPS to the platform."""
        user_cas, host_cas = self.trusted_keys(tenant)
        document = trust.TrustDocument(
            tenant=tenant,
            user_ca_keys=user_cas,
            host_ca_keys=host_cas,
            proxy_host_keys=list(proxy_host_keys),
            tunnel_public_addr=tunnel_public_addr,
            ssh_public_addr=ssh_public_addr,
            web_certificate_sha256=list(web_certificate_sha256),
            issued=now.replace(microsecond=0),
            nonce=nonce,
        )
        return self.get(tenant, "host").sign_trust(document)

    def public_keys(self, tenant: str) -> tuple[str, str]:
        """The tenant's (user CA, host CA) active public keys: those that sign now."""
        return self.get(tenant, "user").public_key, self.get(tenant, "host").public_key

    def trusted_keys(self, tenant: str) -> tuple[list[str], list[str]]:
        """The tenant's (user CA, host CA) trusted public keys, each active key first."""
        return self.get(tenant, "user").trusted_keys, self.get(tenant, "host").trusted_keys

    def add_trusted(self, tenant: str, kind: CAKind, public_key: str) -> CertificateAuthority:
        """Trust ``public_key`` as one more key of the tenant's ``kind`` CA, the active key
        still signing: the first step of a rotation (every party learns the new key before
        anything is signed with it)."""
        # ValueError on anything but a key we accept; stored as OpenSSH writes it (no comment)
        key = certs.openssh_public(certs.load_public_key(public_key))
        return self._change(
            tenant,
            kind,
            key,
            lambda ca: dataclasses.replace(ca, trusted=(*ca.trusted_keys, key)),
        )

    def activate(
        self, tenant: str, kind: CAKind, key: PrivateKey, key_type: KeyType
    ) -> CertificateAuthority:
        """Make ``key`` the tenant's active ``kind`` key, the keys trusted so far staying
        trusted: the step a rotation takes once every party trusts the new key."""
        public = certs.openssh_public(key.public_key())
        return self._change(tenant, kind, public, lambda ca: ca.with_active(key, key_type))

    def _index_user_ca(self, tenant: str, public_key: str) -> None:
        """Name ``tenant`` as the owner of the user CA key ``public_key``; ``ValueError`` when
        another tenant owns it (the proxy would resolve that tenant's users to this one)."""
        index = keys.user_ca_index(public_key)
        try:
            owner = self._store.get(PLATFORM, index).value.decode()
        except KeyNotFound:
            owner = tenant
        if owner != tenant:
            raise ValueError(f"that user CA key is tenant {owner!r}'s: a key is one tenant's")
        self._store.put(PLATFORM, index, tenant.encode())

    def _change(
        self,
        tenant: str,
        kind: CAKind,
        new_key: str,
        change: Callable[[CertificateAuthority], CertificateAuthority],
    ) -> CertificateAuthority:
        """Compare-and-swap the stored CA through ``change``. A user CA key is indexed before
        it is trusted: the proxy finds a user certificate's tenant by the key that signed it."""
        if kind == "user":
            self._index_user_ca(tenant, new_key)

        def stored(record: CARecord) -> CARecord:
            current = CertificateAuthority.from_record(record.to_bytes(), self._box, tenant=tenant)
            return CARecord.from_bytes(change(current).to_record(self._box, tenant=tenant))

        try:
            update(self._store, tenant, keys.ca(kind), CARecord, stored)
        except KeyNotFound as exc:
            raise UnknownTenant.named(tenant) from exc
        self.forget(tenant)
        return self.get(tenant, kind)

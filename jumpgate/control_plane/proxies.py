"""The proxy fleet's own authority: the certificates proxies show each other when peering.

Behind one load balancer, a node's tunnel lands on one proxy and a user's connection on
another; the user's proxy relays to the tunnel's proxy on its peer port (as Teleport's proxy
peering does). Both ends prove they are the platform's proxies with SSH certificates from
the platform's proxy CA: a host certificate for the proxy that is reached and a user
certificate for the one that dials, each naming the proxy's id. The CA key is made on first
use, sealed with the master key and stored in the platform scope; only proxies can ask for
certificates (the internal routes are theirs alone), each for a key it holds.
"""

import json
import threading
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.ca import BACKDATE
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import InvalidRequest
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.sshcert import CertType, Signer
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound
from jumpgate.protocol import certs, models
from jumpgate.protocol.names import check_proxy_id

PROXY_CA_KEY = "ca/proxy"
_CONTEXT = f"{PLATFORM}/{PROXY_CA_KEY}/private_key"
PEER_CERT_TTL = timedelta(hours=24)
"""Proxies renew their peering certificates well before this (every few hours)."""


class ProxyAuthority:
    """The platform's proxy CA, loaded (or made) once and kept unsealed."""

    def __init__(self, store: Store, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._key: ed25519.Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    def _load(self) -> ed25519.Ed25519PrivateKey:
        with self._lock:
            if self._key is not None:
                return self._key
            try:
                raw = self._store.get(PLATFORM, PROXY_CA_KEY).value
            except KeyNotFound:
                raw = self._create()
            pem = self._box.open(json.loads(raw)["private_key"], context=_CONTEXT)
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(key, ed25519.Ed25519PrivateKey)
            self._key = key
            return key

    def _create(self) -> bytes:
        """Store a new CA; if another process stored one first, that one wins."""
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        record = json.dumps(
            {
                "public_key": certs.openssh_public(key.public_key()),
                "private_key": self._box.seal(pem, context=_CONTEXT),
            }
        ).encode()
        try:
            self._store.create(PLATFORM, PROXY_CA_KEY, record)
        except KeyExists:
            return self._store.get(PLATFORM, PROXY_CA_KEY).value
        return record

    def certify(self, proxy_id: str, public_key: str) -> models.ProxyCertificates:
        """Host and user certificates for ``public_key``, both naming ``proxy_id``."""
        try:
            check_proxy_id(proxy_id)
            key = certs.load_public_key(public_key)
        except ValueError as exc:
            raise InvalidRequest(f"proxy certificate: {exc}") from exc
        ca = self._load()
        signer = Signer(ca)
        now = self._clock.now()
        expires = (now + PEER_CERT_TTL).replace(microsecond=0)
        valid_after = int((now - BACKDATE).timestamp())

        def certificate(cert_type: CertType) -> str:
            return signer.certify(
                key,
                cert_type=cert_type,
                key_id=f"proxy {proxy_id}",
                principals=[proxy_id],
                valid_after=valid_after,
                valid_before=int(expires.timestamp()),
                # a relay is a direct-tcpip channel, which asyncssh grants only with this
                extensions={certs.PERMIT_PORT_FORWARDING: ""} if cert_type is CertType.USER else {},
            )

        return models.ProxyCertificates(
            host_certificate=certificate(CertType.HOST),
            user_certificate=certificate(CertType.USER),
            ca=certs.openssh_public(ca.public_key()),
            expires=expires,
        )

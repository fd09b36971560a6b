"""The proxy fleet's own authority: the certificates proxies show each other when peering.

Behind one load balancer, a node's tunnel lands on one proxy and a user's connection on
another; the user's proxy relays to the tunnel's proxy on its peer port (as Teleport's proxy
peering does). Both ends prove they are the platform's proxies with SSH certificates from
the platform's proxy CA: a host certificate for the proxy that is reached and a user
certificate for the one that dials, each naming the proxy's id. The CA is a
``CertificateAuthority`` of kind ``proxy`` in the platform scope, made on first use and
sealed with the master key as tenants' CAs are; only proxies can ask for certificates (the
internal routes are theirs alone), each for a key it holds.
"""

import threading
from datetime import timedelta

from jumpgate.control_plane import keys
from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import InvalidRequest
from jumpgate.control_plane.secrets import SecretBox
from jumpgate.control_plane.store import PLATFORM, Store
from jumpgate.control_plane.store.base import KeyExists, KeyNotFound
from jumpgate.protocol import certs, models
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.names import check_proxy_id

PEER_CERT_TTL = timedelta(hours=24)
"""Proxies renew their peering certificates well before this (every few hours)."""


class ProxyAuthority:
    """The platform's proxy CA, loaded (or made) once and kept unsealed."""

    def __init__(self, store: Store, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._ca: CertificateAuthority | None = None
        self._lock = threading.Lock()

    def _load(self) -> CertificateAuthority:
        with self._lock:
            if self._ca is None:
                try:
                    raw = self._store.get(PLATFORM, keys.ca("proxy")).value
                except KeyNotFound:
                    raw = self._create()
                self._ca = CertificateAuthority.from_record(raw, self._box, tenant=PLATFORM)
            return self._ca

    def _create(self) -> bytes:
        """Store a new CA; if another process stored one first, that one wins."""
        key = generate_key(KeyType.ED25519)
        record = CertificateAuthority("proxy", KeyType.ED25519, key).to_record(
            self._box, tenant=PLATFORM
        )
        try:
            self._store.create(PLATFORM, keys.ca("proxy"), record)
        except KeyExists:
            return self._store.get(PLATFORM, keys.ca("proxy")).value
        return record

    def certify(self, proxy_id: str, public_key: str) -> models.ProxyCertificates:
        """Host and user certificates for ``public_key``, both naming ``proxy_id``."""
        try:
            check_proxy_id(proxy_id)
            key = certs.load_public_key(public_key)
        except ValueError as exc:
            raise InvalidRequest(f"proxy certificate: {exc}") from exc
        ca = self._load()
        host, user, expires = ca.sign_proxy(
            key, proxy_id=proxy_id, now=self._clock.now(), ttl=PEER_CERT_TTL
        )
        return models.ProxyCertificates(
            host_certificate=host, user_certificate=user, ca=ca.public_key, expires=expires
        )

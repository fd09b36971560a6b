"""Who is calling: proof of possession of a key certified by the tenant's user CA.

A request is accepted when its certificate was signed by the addressed tenant's user CA and
is within its validity window, its signature over the request verifies with the certified
key, its timestamp is within five minutes, its nonce was not seen before (for requests that
change state), and the user still exists (the same user, not a later namesake) and is not
locked by an admin, nor stopped by a lock naming the user, their id or one of their roles.
The last check is made on every request, so removing or locking a user takes effect on their
next call; the proxy asks the same of every new SSH connection.

What the caller may then do is their roles' rules, read on every request too: each route
names the kind and verb it needs (``Identity.authorize``).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertificateType,
    load_ssh_public_identity,
)

from jumpgate.control_plane import keys
from jumpgate.control_plane.ca import Authorities
from jumpgate.control_plane.clock import Clock
from jumpgate.control_plane.errors import (
    AccessDenied,
    CertificateExpired,
    Unauthenticated,
)
from jumpgate.control_plane.roles import RoleService
from jumpgate.control_plane.store import Store
from jumpgate.control_plane.store.base import KeyExists
from jumpgate.control_plane.users import UserService
from jumpgate.protocol import certs, signing
from jumpgate.protocol.durations import format_duration
from jumpgate.protocol.policy import AccessChecker
from jumpgate.protocol.resources import Kind, Verb

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Identity:
    """An authenticated caller, with roles as the store has them now (read on every
    request, so a role change or a role taken away applies to the next call)."""

    tenant: str
    user: str
    roles: list[str]
    logins: list[str]
    checker: AccessChecker

    def authorize(self, kind: Kind, verb: Verb, *, own: bool = False) -> None:
        """Refuse the call unless a rule of the caller's roles allows ``verb`` over ``kind``
        (``own``: the resource is the caller's own session) and none denies it."""
        if not self.checker.allows(kind, verb, own=own):
            raise AccessDenied(
                f"user {self.user!r} may not {verb.value} {kind.value}: ask a tenant admin"
            )

    def authorize_some(self, kind: Kind, verb: Verb) -> None:
        """As ``authorize``, passing when the rules allow at least the caller's own (a
        listing then shows only those)."""
        if not self.checker.allows_some(kind, verb):
            self.authorize(kind, verb)


@dataclass(frozen=True)
class Request:
    """What authentication reads of an HTTP request."""

    method: str
    host: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Authenticator:
    """Turns signed requests into identities; see the module docstring."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        authorities: Authorities,
        users: UserService,
        roles: RoleService,
    ) -> None:
        self._store = store
        self._clock = clock
        self._authorities = authorities
        self._users = users
        self._roles = roles

    def authenticate(self, tenant: str, request: Request) -> Identity:
        headers = request.headers
        cert_text = headers.get(signing.HEADER_CERT)
        signature = headers.get(signing.HEADER_SIGNATURE)
        if not cert_text or not signature:
            raise Unauthenticated("not logged in: run jump login --proxy=<tenant address>")
        cert = _parse_certificate(cert_text)
        user_ca = self._authorities.get(tenant, "user")
        if not certs.is_trusted(certs.openssh_public(cert.signature_key()), user_ca.trusted_keys):
            raise Unauthenticated(
                "certificate was not issued by this cluster: run jump login against it"
            )
        try:
            cert.verify_cert_signature()
        except InvalidSignature as exc:
            raise Unauthenticated("certificate signature is invalid: run jump login") from exc
        now = self._clock.now()
        self._check_validity(cert, now)
        extensions = cert.extensions
        user = extensions.get(certs.EXT_USER.encode(), b"").decode()
        if extensions.get(certs.EXT_TENANT.encode(), b"").decode() != tenant or not user:
            raise Unauthenticated("certificate names another cluster: run jump login against it")
        self._check_signature(tenant, cert, request, signature, now)
        user_id = extensions.get(certs.EXT_USER_ID.encode(), b"").decode()
        record = self._users.check_access(tenant, user, user_id)
        checker = self._roles.checker(tenant, record)
        return Identity(tenant, record.name, record.roles, record.logins, checker)

    @staticmethod
    def _check_validity(cert: SSHCertificate, now: datetime) -> None:
        if cert.type is not SSHCertificateType.USER:
            raise Unauthenticated("a user certificate is required: run jump login")
        valid_after = datetime.fromtimestamp(cert.valid_after, UTC)
        valid_before = datetime.fromtimestamp(cert.valid_before, UTC)
        if now < valid_after:
            raise Unauthenticated("certificate is not valid yet: check this machine's clock")
        if now >= valid_before:
            ago = format_duration(now - valid_before)
            raise CertificateExpired(f"certificate expired {ago} ago: run jump login")

    def _check_signature(
        self, tenant: str, cert: SSHCertificate, request: Request, signature: str, now: datetime
    ) -> None:
        headers = request.headers
        try:
            timestamp = int(headers.get(signing.HEADER_TIME, ""))
        except ValueError:
            raise Unauthenticated("request timestamp missing or malformed") from None
        nonce = headers.get(signing.HEADER_NONCE, "")
        if not _NONCE.match(nonce):
            raise Unauthenticated("request nonce missing or malformed")
        skew = abs(now.timestamp() - timestamp)
        if skew > signing.MAX_CLOCK_SKEW_SECONDS:
            raise Unauthenticated(
                f"request time is {int(skew)}s off the server's: check this machine's clock"
            )
        signed = signing.SignedRequest(
            request.method,
            request.host,
            request.path,
            request.query,
            timestamp,
            nonce,
            request.body,
        )
        public_key = cert.public_key()
        assert not isinstance(public_key, SSHCertificate)
        if not signing.verify(public_key, signed, signature):
            raise Unauthenticated("request signature does not verify: run jump login")
        if request.method.upper() not in _SAFE_METHODS:
            expires = now + timedelta(seconds=2 * signing.MAX_CLOCK_SKEW_SECONDS)
            try:
                self._store.create(tenant, keys.nonce(nonce), b"", expires=expires)
            except KeyExists:
                raise Unauthenticated("request was replayed: send a new request") from None


def _parse_certificate(text: str) -> SSHCertificate:
    try:
        cert = load_ssh_public_identity(text.strip().encode())
    except (ValueError, TypeError, IndexError, UnsupportedAlgorithm) as exc:
        raise Unauthenticated("credentials are not an SSH certificate: run jump login") from exc
    if not isinstance(cert, SSHCertificate):
        raise Unauthenticated("credentials are a plain key, not a certificate: run jump login")
    return cert

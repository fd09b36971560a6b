"""How a caller proves possession of a key certified by its tenant's user CA.

Every authenticated API request carries the caller's SSH user certificate and a signature,
made with the certificate's private key, over a canonical form of the request: method, host,
path, query, a timestamp, a nonce and the SHA-256 of the body. The server checks the
certificate against the tenant's user CA and the signature against the certificate's key, so
no long-lived shared secret ever crosses the wire and a captured request cannot be altered.
"""

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

HEADER_CERT = "x-jumpgate-cert"
HEADER_TIME = "x-jumpgate-time"
HEADER_NONCE = "x-jumpgate-nonce"
HEADER_SIGNATURE = "x-jumpgate-signature"
SCHEME = "JUMPGATE-REQUEST-V1"
MAX_CLOCK_SKEW_SECONDS = 300
"""A signed request older or newer than this is refused, bounding replay."""

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request the signature covers."""

    method: str
    host: str
    path: str
    query: str
    timestamp: int
    nonce: str
    body: bytes

    def canonical(self) -> bytes:
        """The exact bytes signed: one field a line, the body as its SHA-256."""
        return "\n".join(
            (
                SCHEME,
                self.method.upper(),
                self.host.lower(),
                self.path,
                self.query,
                str(self.timestamp),
                self.nonce,
                hashlib.sha256(self.body).hexdigest(),
            )
        ).encode()


def sign(key: PrivateKey, request: SignedRequest) -> str:
    """Base64 signature of the request's canonical form."""
    data = request.canonical()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(data)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        raw = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def headers(key: PrivateKey, certificate: str, request: SignedRequest) -> dict[str, str]:
    """The headers that carry ``request``'s proof: the certificate, its timestamp and nonce,
    and ``key``'s signature."""
    return {
        HEADER_CERT: certificate,
        HEADER_TIME: str(request.timestamp),
        HEADER_NONCE: request.nonce,
        HEADER_SIGNATURE: sign(key, request),
    }


def verify(key: PublicKey, request: SignedRequest, signature: str) -> bool:
    """Whether ``signature`` is ``key``'s signature of the request."""
    try:
        raw = base64.b64decode(signature, validate=True)
        data = request.canonical()
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, data)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True

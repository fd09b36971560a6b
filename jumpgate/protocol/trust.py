"""What a node trusts, signed by its tenant's host CA: the trust document.

A node is given one thing it can check without the network: the pin of its tenant's host
CA (``certs.ca_pin``). Everything else it comes to trust (the tenant's user CA keys, which
decide who gets a root shell; the host CA keys; the proxies' host keys and the tunnel
address, which decide whom it dials) arrives in a ``TrustDocument`` the platform signs with
the host CA's private key. The node verifies it with a host CA key it already holds: at join
the one whose pin it was given, later the ones it kept. TLS is not part of the argument, so
``--insecure`` (a self-signed web certificate) weakens nothing here.

The other way round, the document authenticates TLS: when the platform's web certificate is
self-signed, the document names it (``web_certificate_sha256``), and an agent with
``--insecure`` sends its requests (the join token first) only on a connection presenting
a certificate so named (``client.Client(web_certificates=...)``). A relay that passes the
document through unchanged thus never reads the token. A certificate a CA issued is named by
nothing: TLS verifies it.

The signed form (``SignedTrust``) carries the document's exact bytes (``payload``, base64 of
canonical JSON), the signature over ``DOMAIN + payload`` and the signer's public key. The
verifier checks the signer against the keys it trusts and the signature *before* it parses
the payload, so nothing parsed is ever unauthenticated. The domain prefix keeps a host CA
signature over a trust document from being valid as anything else the CA signs (SSH
certificates sign a different structure, and never start with this prefix).

A ``nonce`` chosen by the node and echoed in the document makes each answer fresh: an old
document (an old proxy key, a retired tunnel address) cannot be replayed to it. A document
pushed to the node without a request (over its authenticated tunnel) has no nonce: the node
takes it only when issued no earlier than the one it holds.

The CAs are key sets (decision 0022): the document lists every trusted user and host CA key,
and a node accepts a new document signed by any host CA key it trusts already, so the set can
grow (a new key brought in) and shrink (an old one retired) without asking anyone for a pin.

Errors::

    TrustError      the document is not signed by a key the node trusts, or is not its answer
"""

import base64
import json
from datetime import datetime
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from jumpgate.protocol import certs

DOMAIN = b"jumpgate-trust-document-v1\x00"
"""Prefixed to the payload before signing: a signature made for this purpose only."""
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"
"""A node's nonce: URL-safe, 16 to 64 characters (``secrets.token_urlsafe(24)`` is 32)."""
MAX_PAYLOAD_BYTES = 64 * 1024
"""A document larger than this is refused before it is hashed or parsed."""
CertificateDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A web certificate as the document names it: SHA-256 of its DER bytes, lowercase hex."""

__all__ = [
    "DOMAIN",
    "NONCE_PATTERN",
    "RSA_HASH",
    "CertificateDigest",
    "SignedTrust",
    "TrustDocument",
    "TrustError",
    "canonical",
    "ecdsa_hash",
    "held_document",
    "pin_of",
    "signed_bytes",
    "verify",
]


class TrustError(Exception):
    """The trust document cannot be trusted; ``str()`` says why in one line."""


class TrustDocument(BaseModel):
    """Everything a node of ``tenant`` trusts, as its host CA vouches for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str  # the tenant the document speaks for
    user_ca_keys: list[str]  # OpenSSH keys of the user CAs whose certificates the node accepts
    host_ca_keys: list[str]  # OpenSSH keys of the host CAs (they sign this and host certificates)
    proxy_host_keys: list[str]  # SSH host keys the proxies present on the tunnel port
    tunnel_public_addr: str  # HOST:PORT the node dials for its tunnel
    ssh_public_addr: str  # HOST:PORT users reach the proxy's SSH on
    # The proxies' self-signed web certificates (none when a CA issued it: TLS verifies that)
    web_certificate_sha256: list[CertificateDigest] = Field(default_factory=list)
    issued: datetime  # when the platform signed it
    nonce: str = ""  # echoed from the request that asked for it ("" when nobody asked)


class SignedTrust(BaseModel):
    """A trust document as it travels: its exact bytes, the signature and the signer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload: str = Field(max_length=MAX_PAYLOAD_BYTES * 2)  # base64 of ``canonical(document)``
    signature: str = Field(max_length=4096)  # base64 signature of ``DOMAIN + payload bytes``
    signer: str = Field(max_length=8192)  # OpenSSH public key of the host CA that signed


def canonical(document: TrustDocument) -> bytes:
    """The document's bytes: compact JSON with sorted keys."""
    return json.dumps(
        document.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()


def signed_bytes(payload: bytes) -> bytes:
    """What the host CA signs: the domain prefix, then the payload."""
    return DOMAIN + payload


def ecdsa_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    """The hash an ECDSA key of this curve signs with (SHA-256 for P-256, as SSH does)."""
    return hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()


RSA_HASH = hashes.SHA512
"""RSA CAs sign PKCS#1 v1.5 with SHA-512 (as ``rsa-sha2-512``)."""


def _check_signature(key: certs.PublicKey, signature: bytes, data: bytes) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(ecdsa_hash(key)))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), RSA_HASH())
    else:  # pragma: no cover - load_public_key returns only the three
        raise InvalidSignature


def verify(
    signed: object,
    *,
    trusted_pins: list[str],
    nonce: str | None = None,
    tenant: str | None = None,
) -> TrustDocument:
    """The document in ``signed`` (a ``SignedTrust`` or its JSON form, as received), once
    shown to be signed by a host CA whose pin is in ``trusted_pins``, to answer ``nonce``
    (when given) and to speak for ``tenant`` (when given).

    ``TrustError`` otherwise; it never says more than what failed, so a caller can put the
    pin it expected next to it.
    """
    try:
        envelope = signed if isinstance(signed, SignedTrust) else SignedTrust.model_validate(signed)
    except ValidationError as exc:
        raise TrustError("the answer carries no signed trust document") from exc
    try:
        signer = certs.load_public_key(envelope.signer)
        pin = certs.ca_pin(envelope.signer)
    except ValueError as exc:
        raise TrustError("the trust document names no usable signer key") from exc
    if pin not in trusted_pins:
        raise TrustError(f"the trust document is signed by a CA pinned as {pin}")
    try:
        payload = base64.b64decode(envelope.payload, validate=True)
        signature = base64.b64decode(envelope.signature, validate=True)
    except ValueError as exc:
        raise TrustError("the trust document is not valid base64") from exc
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise TrustError("the trust document is too large")
    try:
        _check_signature(signer, signature, signed_bytes(payload))
    except InvalidSignature as exc:
        raise TrustError("the trust document's signature does not verify") from exc
    try:
        document = TrustDocument.model_validate_json(payload)
    except ValidationError as exc:
        raise TrustError("the signed trust document is not one this node understands") from exc
    if pin not in {pin_of(k) for k in document.host_ca_keys}:
        raise TrustError("the trust document's signer is not among the host CAs it lists")
    if nonce is not None and document.nonce != nonce:
        raise TrustError("the trust document answers another request (replayed?)")
    if tenant is not None and document.tenant != tenant:
        raise TrustError(f"the trust document speaks for tenant {document.tenant!r}")
    return document


def held_document(signed: object) -> TrustDocument | None:
    """The document of a signed trust the caller verified *before* and kept (a node's
    identity.json), read without verifying again: only to compare a new document with it.
    ``None`` when it cannot be read."""
    try:
        envelope = signed if isinstance(signed, SignedTrust) else SignedTrust.model_validate(signed)
        return TrustDocument.model_validate_json(base64.b64decode(envelope.payload, validate=True))
    except (ValidationError, ValueError):
        return None


def pin_of(key: str) -> str:
    """``certs.ca_pin`` of ``key``, or ``""`` when it is not a key we accept."""
    try:
        return certs.ca_pin(key)
    except ValueError:
        return ""

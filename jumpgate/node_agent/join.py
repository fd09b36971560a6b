"""Joining, and finding the platform again: believe only what the pinned host CA signed.

The node is given the pin of its tenant's host CA. Every answer it acts on carries a trust
document signed by that CA (``protocol.trust``) and answering a nonce the node just chose;
the node verifies it with the pinned key (at join) or with any of the host CA keys it trusts
now (later: the pin is checked at join only, decision 0022), never with what ``/v1/ca`` or
TLS says at the time. A document pushed to it (``adopt``) is held to the same keys.
``--insecure`` (a self-signed web certificate) therefore changes nothing here: a relay that
rewrites an answer gets it refused.

Nor can a relay that rewrites nothing read the join token: with ``--insecure`` the client is
bound (``vouch``) to the web certificates the verified document names, before the token is
sent, and writes no request on a connection presenting another one.
"""

import dataclasses
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from jumpgate.node_agent.errors import JoinRefused, PinMismatch
from jumpgate.node_agent.identity import Identity
from jumpgate.protocol import calls, certs, models
from jumpgate.protocol.client import (
    APIError,
    AsyncClient,
    InvalidAnswer,
    UnvouchedCertificate,
    invalid_detail,
)
from jumpgate.protocol.trust import (
    SignedTrust,
    TrustDocument,
    TrustError,
    held_document,
    pin_of,
    verify,
)


def new_nonce() -> str:
    """A fresh nonce for one request of a trust document."""
    return secrets.token_urlsafe(24)


async def fetch_trust(
    client: AsyncClient, pins: list[str], shown_pin: str
) -> tuple[SignedTrust, TrustDocument]:
    """A fresh trust document from ``/v1/trust``, verified against the host CAs ``pins``.

    ``PinMismatch`` (one line, naming ``shown_pin``) when it is signed by another CA, or not
    by the one it claims, or answers another request."""
    nonce = new_nonce()
    try:
        answer: object = (await client.send(calls.trust(nonce))).model_dump()
    except InvalidAnswer as exc:
        answer = exc.payload  # refused below, naming the pin: a rewritten answer, not a fault
    return _verified(client, answer, pins, shown_pin, nonce)


def _verified(
    client: AsyncClient, answer: object, pins: list[str], shown_pin: str, nonce: str
) -> tuple[SignedTrust, TrustDocument]:
    signer = answer.get("signer", "") if isinstance(answer, dict) else ""
    actual = pin_of(signer) if isinstance(signer, str) else ""
    if actual and actual not in pins:
        raise PinMismatch(
            f"CA pin mismatch: {client.host_header} presents {actual} but this node pins "
            f"{shown_pin}; check the address, or the pin shown by jumpctl status"
        )
    try:
        document = verify(answer, trusted_pins=pins, nonce=nonce)
    except TrustError as exc:
        raise PinMismatch(
            f"refused the answer of {client.host_header}: {exc}, so it is not vouched for by "
            f"the host CA this node pins ({shown_pin}); something between this node and the "
            "platform may be rewriting answers: nothing new was trusted"
        ) from exc
    assert isinstance(answer, dict)
    return SignedTrust.model_validate(answer), document


def vouch(client: AsyncClient, document: TrustDocument, shown_pin: str) -> None:
    """With ``--insecure``, let ``client`` send requests only on connections presenting a web
    certificate ``document`` (verified) names; ``PinMismatch`` saying to drop ``--insecure``
    when it names none (a CA issued the certificate: TLS verification authenticates it)."""
    if not client.insecure:
        return
    if not document.web_certificate_sha256:
        raise PinMismatch(
            f"--insecure, but the host CA pinned as {shown_pin} names no self-signed web "
            f"certificate of {client.host_header} (a CA issued it): drop --insecure, so that "
            "TLS verifies it before the join token is sent"
        )
    client.web_certificates = frozenset(document.web_certificate_sha256)


def unvouched(exc: UnvouchedCertificate, shown_pin: str, what: str) -> PinMismatch:
    """The one line for a server whose web certificate the pinned CA does not vouch for."""
    return PinMismatch(
        f"{exc.host_header} presents a web certificate the pinned CA does not vouch for: "
        f"sha256 {exc.digest} is not named by the host CA pinned as {shown_pin}; something "
        f"between this node and the platform may be intercepting HTTPS: {what}"
    )


def check_certificate(
    certificate: str, key: ed25519.Ed25519PrivateKey, host_id: str, pins: list[str]
) -> None:
    """Refuse a host certificate that is not a host certificate of ``key`` for ``host_id``
    signed by one of the host CAs ``pins``."""
    try:
        cert = serialization.load_ssh_public_identity(certificate.encode())
        if not isinstance(cert, serialization.SSHCertificate):
            raise ValueError("not a certificate")
        cert.verify_cert_signature()
    except (ValueError, InvalidSignature) as exc:
        raise PinMismatch("the platform sent an invalid host certificate: join again") from exc
    principals = {p.decode(errors="replace") for p in cert.valid_principals}
    if (
        cert.type is not serialization.SSHCertificateType.HOST
        or certs.openssh_public(cert.public_key()) != certs.openssh_public(key.public_key())
        or pin_of(certs.openssh_public(cert.signature_key())) not in pins
        or host_id not in principals
    ):
        raise PinMismatch(
            "the host certificate the platform sent is not for this node's key, or not signed "
            f"by the host CA pinned as {' or '.join(pins)}: nothing was trusted"
        )


async def join(
    client: AsyncClient, *, token: str, ca_pin: str, nodename: str, insecure: bool
) -> tuple[Identity, ed25519.Ed25519PrivateKey]:
    """A new identity for this node; ``JoinRefused`` when the token is not accepted,
    ``PinMismatch`` when an answer is not vouched for by the pinned host CA."""
    # A wrong pin or address fails here, before the token is sent; and with --insecure the
    # token then goes only to a server presenting a web certificate the pinned CA names.
    _, first = await fetch_trust(client, [ca_pin], ca_pin)
    vouch(client, first, ca_pin)
    key = ed25519.Ed25519PrivateKey.generate()
    nonce = new_nonce()
    try:
        body = models.JoinRequest(
            token=token,
            public_key=certs.openssh_public(key.public_key()),
            nodename=nodename,
            nonce=nonce,
        )
    except ValidationError as exc:
        raise JoinRefused(f"join refused: {invalid_detail(exc)}") from exc
    try:
        joined = await client.send(calls.join(body))
    except InvalidAnswer as exc:
        # Refused as not vouched for by the pinned CA when its trust document is not
        _verified(client, _trust_of(exc.payload), [ca_pin], ca_pin, nonce)
        raise
    except UnvouchedCertificate as exc:
        raise unvouched(exc, ca_pin, "the join token was not sent") from exc
    except APIError as exc:
        if exc.status < 500:
            raise JoinRefused(f"join refused: {exc}") from exc
        raise
    signed, document = _verified(client, joined.trust.model_dump(), [ca_pin], ca_pin, nonce)
    host_id = joined.host_id
    certificate = joined.certificate
    check_certificate(certificate, key, host_id, [ca_pin])
    identity = Identity(
        host_id=host_id,
        tenant=document.tenant,
        nodename=nodename,
        auth_server=client.host_header,
        ca_pin=ca_pin,
        user_ca_keys=list(document.user_ca_keys),
        host_ca_keys=list(document.host_ca_keys),
        certificate=certificate,
        insecure=insecure,
    )
    return trusting(identity, signed, document), key


def _trust_of(answer: object) -> object:
    return answer.get("trust") if isinstance(answer, dict) else None


def trusting(identity: Identity, signed: SignedTrust, document: TrustDocument) -> Identity:
    """``identity`` holding what ``document`` (already verified) says, and the document."""
    return dataclasses.replace(
        identity,
        user_ca_keys=list(document.user_ca_keys),
        host_ca_keys=list(document.host_ca_keys),
        proxy_host_keys=list(document.proxy_host_keys),
        tunnel_public_addr=document.tunnel_public_addr,
        trust=signed.model_dump(mode="json"),
    )


async def rediscover(client: AsyncClient, identity: Identity) -> Identity:
    """What the platform says now, verified with the host CA keys the node holds (not with
    what ``/v1/ca`` says today): ``identity`` holding it. ``PinMismatch`` when refused."""
    signed, document = await fetch_trust(client, identity.host_ca_pins, identity.ca_pin)
    if document.tenant != identity.tenant:
        raise PinMismatch(
            f"refused the answer of {client.host_header}: it speaks for tenant "
            f"{document.tenant!r}, not {identity.tenant!r} (pin {identity.ca_pin})"
        )
    if client.insecure:
        # Any later request on ``client`` goes only to a certificate the document names
        # (none, when a CA issued it now: nothing is sent without verified TLS then)
        client.web_certificates = frozenset(document.web_certificate_sha256)
    return trusting(identity, signed, document)


def adopt(identity: Identity, signed: object, *, nonce: str | None = None) -> Identity:
    """``identity`` holding what a trust document handed to the node says (pushed over its
    tunnel: answering the tunnel's hello ``nonce`` when given), once shown to be signed by a
    host CA key the node trusts now, for its tenant, and issued no earlier than the document
    it holds (an older one, a replay, could bring back a retired key). ``PinMismatch``
    otherwise, trusting nothing new.
    """
    try:
        document = verify(
            signed, trusted_pins=identity.host_ca_pins, nonce=nonce, tenant=identity.tenant
        )
    except TrustError as exc:
        raise PinMismatch(
            f"refused a trust document: {exc}, not by a host CA key this node trusts "
            f"(it joined with {identity.ca_pin}): nothing new was trusted"
        ) from exc
    held = held_document(identity.trust) if identity.trust is not None else None
    if held is not None and document.issued < held.issued:
        raise PinMismatch(
            f"refused a trust document issued {document.issued.isoformat()}, before the one "
            f"this node holds ({held.issued.isoformat()}): a replay? nothing new was trusted"
        )
    return trusting(identity, SignedTrust.model_validate(signed), document)

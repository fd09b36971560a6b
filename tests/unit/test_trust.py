"""The trust document: signed by each kind of host CA, refused whenever anything is off."""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from jumpgate.control_plane.ca import CertificateAuthority, generate_key
from jumpgate.protocol import certs
from jumpgate.protocol.certs import KeyType
from jumpgate.protocol.trust import DOMAIN, TrustDocument, TrustError, canonical, verify

NONCE = "n0nce-n0nce-n0nce-n0nce"


def _ca(key_type: KeyType) -> CertificateAuthority:
    return CertificateAuthority("host", key_type, generate_key(key_type))


def _document(ca: CertificateAuthority, **changes: Any) -> TrustDocument:
    fields: dict[str, Any] = {
        "tenant": "acme",
        "user_ca_keys": [certs.openssh_public(generate_key(KeyType.ED25519).public_key())],
        "host_ca_keys": [ca.public_key],
        "proxy_host_keys": [certs.openssh_public(generate_key(KeyType.ED25519).public_key())],
        "tunnel_public_addr": "acme.example.sh:3024",
        "ssh_public_addr": "acme.example.sh:3023",
        "issued": datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
        "nonce": NONCE,
    }
    return TrustDocument(**{**fields, **changes})


@pytest.fixture(scope="module", params=list(KeyType), ids=[k.value for k in KeyType])
def ca(request: pytest.FixtureRequest) -> CertificateAuthority:
    return _ca(request.param)


def _pin(ca: CertificateAuthority) -> str:
    return certs.ca_pin(ca.public_key)


def test_a_signed_document_verifies_with_its_pin(ca: CertificateAuthority) -> None:
    document = _document(ca)
    signed = ca.sign_trust(document)
    assert verify(signed, trusted_pins=[_pin(ca)], nonce=NONCE, tenant="acme") == document
    as_sent = json.loads(signed.model_dump_json())
    assert verify(as_sent, trusted_pins=[_pin(ca)], nonce=NONCE) == document


def _payload(signed: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(signed["payload"]))
    return decoded


def _encode(payload: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()


TAMPERING = {
    "user CA swapped": lambda p: {**p, "user_ca_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"]},
    "tunnel moved": lambda p: {**p, "tunnel_public_addr": "evil.example:3024"},
    "proxy key added": lambda p: {**p, "proxy_host_keys": [*p["proxy_host_keys"], "x"]},
    "reordered keys": lambda p: dict(reversed(list(p.items()))),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_tampered_payload_is_refused(ca: CertificateAuthority, change: Any) -> None:
    signed = ca.sign_trust(_document(ca)).model_dump(mode="json")
    signed["payload"] = _encode(change(_payload(signed)))
    with pytest.raises(TrustError, match="signature does not verify"):
        verify(signed, trusted_pins=[_pin(ca)], nonce=NONCE)


def test_a_document_signed_by_another_ca_is_refused(ca: CertificateAuthority) -> None:
    other = _ca(KeyType.ED25519)
    claimed = other.sign_trust(_document(other))
    with pytest.raises(TrustError, match="signed by a CA pinned as"):
        verify(claimed, trusted_pins=[_pin(ca)], nonce=NONCE)
    # Another CA's signature, presented as the pinned CA's
    forged = claimed.model_copy(update={"signer": ca.public_key})
    with pytest.raises(TrustError, match="signature does not verify"):
        verify(forged, trusted_pins=[_pin(ca)], nonce=NONCE)


def test_a_signature_without_the_domain_prefix_is_refused() -> None:
    ca = _ca(KeyType.ED25519)
    document = _document(ca)
    key = ca.private_key
    assert hasattr(key, "sign")
    bare = base64.b64encode(key.sign(canonical(document))).decode()  # type: ignore[call-arg]
    signed = ca.sign_trust(document).model_copy(update={"signature": bare})
    with pytest.raises(TrustError, match="signature does not verify"):
        verify(signed, trusted_pins=[_pin(ca)])
    assert DOMAIN.endswith(b"\x00")


def test_a_replayed_document_answers_another_nonce(ca: CertificateAuthority) -> None:
    signed = ca.sign_trust(_document(ca))
    with pytest.raises(TrustError, match="answers another request"):
        verify(signed, trusted_pins=[_pin(ca)], nonce="another-nonce-value-1234")


def test_a_document_for_another_tenant_is_refused(ca: CertificateAuthority) -> None:
    signed = ca.sign_trust(_document(ca, tenant="globex"))
    with pytest.raises(TrustError, match="tenant 'globex'"):
        verify(signed, trusted_pins=[_pin(ca)], tenant="acme")


def test_the_signer_must_be_among_the_host_cas_it_lists(ca: CertificateAuthority) -> None:
    other = _ca(KeyType.ED25519)
    signed = ca.sign_trust(_document(ca, host_ca_keys=[other.public_key]))
    with pytest.raises(TrustError, match="not among the host CAs"):
        verify(signed, trusted_pins=[_pin(ca)])


GARBAGE: dict[str, Any] = {
    "nothing": None,
    "not a mapping": ["payload"],
    "missing signature": {"payload": "e30=", "signer": "ssh-ed25519 AAAA"},
    "bad signer": {"payload": "e30=", "signature": "AA==", "signer": "not a key"},
    "extra field": {"payload": "e30=", "signature": "AA==", "signer": "x", "more": 1},
}


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_a_trust_error(answer: Any) -> None:
    ca = _ca(KeyType.ED25519)
    with pytest.raises(TrustError):
        verify(answer, trusted_pins=[_pin(ca)])


def test_bad_base64_and_a_payload_that_is_no_document() -> None:
    ca = _ca(KeyType.ED25519)
    signed = ca.sign_trust(_document(ca)).model_dump(mode="json")
    with pytest.raises(TrustError, match="base64"):
        verify({**signed, "payload": "%%%"}, trusted_pins=[_pin(ca)])
    key = ca.private_key
    payload = b'{"tenant":"acme"}'
    signature = key.sign(DOMAIN + payload)  # type: ignore[call-arg]
    incomplete = {
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(signature).decode(),
        "signer": ca.public_key,
    }
    with pytest.raises(TrustError, match="not one this node understands"):
        verify(incomplete, trusted_pins=[_pin(ca)])

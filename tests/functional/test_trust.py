"""``/v1/trust`` and the join answer carry what nodes trust, signed by the tenant's host CA;
``POST /v1/tokens`` says whether the join command needs ``--insecure``."""

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.control_plane.handlers.api import make_handler
from jumpgate.control_plane.handlers.internal import make_internal_handler
from jumpgate.edge_proxy.control import ControlPlaneClient, ControlPlaneError
from jumpgate.protocol import certs
from jumpgate.protocol.trust import TrustError, verify
from tests.functional.conftest import Platform

NONCE = "a-nonce-of-the-node-0123456789"


def test_the_trust_document_is_signed_by_the_tenants_host_ca(platform: Platform) -> None:
    platform.invite("acme", "alice")
    platform.invite("globex", "gina")
    ca = platform.call("GET", "/v1/ca").body
    answer = platform.call("GET", "/v1/trust", query=f"nonce={NONCE}")
    assert answer.status == 200, answer.body
    document = verify(answer.body, trusted_pins=[ca["ca_pin"]], nonce=NONCE, tenant="acme")
    assert document.user_ca_keys == ca["user_ca_keys"]
    assert document.host_ca_keys == ca["host_ca_keys"]
    assert document.tunnel_public_addr == "acme.localhost:3024"
    assert document.ssh_public_addr == "acme.localhost:3023"
    assert document.proxy_host_keys == list(platform.plane.settings.proxy_host_keys)
    # Another tenant's document is signed by its own CA: acme's pin refuses it
    other = platform.call("GET", "/v1/trust", tenant="globex").body
    with pytest.raises(TrustError, match="signed by a CA pinned as"):
        verify(other, trusted_pins=[ca["ca_pin"]])


@pytest.mark.parametrize("nonce", ["short", "has spaces in it 0123456789", "x" * 65])
def test_a_bad_nonce_is_a_400(platform: Platform, nonce: str) -> None:
    platform.invite("acme", "alice")
    answer = platform.call("GET", "/v1/trust", query=f"nonce={nonce}")
    assert answer.status == 400, answer.body


def test_the_join_answer_carries_the_signed_document_for_the_nodes_nonce(
    platform: Platform,
) -> None:
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    joined = platform.call(
        "POST",
        "/v1/join",
        {"token": token["token"], "public_key": key, "nodename": "web-1", "nonce": NONCE},
    )
    assert joined.status == 200, joined.body
    document = verify(joined.body["trust"], trusted_pins=[token["ca_pin"]], nonce=NONCE)
    assert document.tenant == "acme"
    assert certs.ca_pin(document.host_ca_keys[0]) == token["ca_pin"]


@pytest.mark.parametrize("self_signed", [False, True], ids=["ca-issued", "self-signed"])
def test_tokens_say_whether_the_web_certificate_is_self_signed(
    platform: Platform, self_signed: bool
) -> None:
    plane = platform.plane
    plane.settings = dataclasses.replace(plane.settings, self_signed_web_certificate=self_signed)
    platform.handler = make_handler(plane)
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body
    assert token["self_signed_web_certificate"] is self_signed


@pytest.mark.parametrize("named", [(), ("ab" * 32,), ("ab" * 32, "cd" * 32)])
def test_the_document_names_the_self_signed_web_certificates(
    platform: Platform, named: tuple[str, ...]
) -> None:
    """An ``--insecure`` node sends its token only to a web certificate named here (none on
    AWS, where a CA issues it); the join answer's document names the same."""
    plane = platform.plane
    plane.settings = dataclasses.replace(plane.settings, web_certificate_sha256=named)
    platform.handler = make_handler(plane)
    admin = platform.admin_session()
    token = platform.call("POST", "/v1/tokens", {"ttl_seconds": 300}, session=admin).body
    answer = platform.call("GET", "/v1/trust", query=f"nonce={NONCE}")
    document = verify(answer.body, trusted_pins=[token["ca_pin"]], nonce=NONCE)
    assert document.web_certificate_sha256 == list(named)
    key = certs.openssh_public(ed25519.Ed25519PrivateKey.generate().public_key())
    joined = platform.call(
        "POST",
        "/v1/join",
        {"token": token["token"], "public_key": key, "nodename": "web-1", "nonce": NONCE},
    ).body
    joined_document = verify(joined["trust"], trusted_pins=[token["ca_pin"]], nonce=NONCE)
    assert joined_document.web_certificate_sha256 == list(named)


def test_the_proxy_gets_the_document_it_pushes_on_a_tunnel(platform: Platform) -> None:
    """``/internal/v1/trust``: what ``/v1/trust`` answers, for the tunnel's tenant and nonce."""
    platform.invite("acme", "alice")
    ca = platform.call("GET", "/v1/ca").body
    answer = platform.internal("/internal/v1/trust", {"tenant": "acme", "nonce": NONCE})
    assert answer["statusCode"] == 200, answer
    document = verify(
        json.loads(answer["body"]), trusted_pins=[ca["ca_pin"]], nonce=NONCE, tenant="acme"
    )
    assert document.tunnel_public_addr == "acme.localhost:3024"
    refused = platform.internal("/internal/v1/trust", {"tenant": "acme", "nonce": "short"})
    assert refused["statusCode"] == 400, refused
    # The proxy's client of that route (``edge_proxy.control``), as the control channel calls it
    handler = make_internal_handler(platform.plane)

    async def invoke(event: dict[str, Any]) -> dict[str, Any]:
        return dict(handler(event, None))

    signed = asyncio.run(ControlPlaneClient(invoke).trust("acme", NONCE))
    assert verify(signed, trusted_pins=[ca["ca_pin"]], nonce=NONCE, tenant="acme") == document
    with pytest.raises(ControlPlaneError) as bad:
        asyncio.run(ControlPlaneClient(invoke).trust("acme", "short"))
    assert (bad.value.status, str(bad.value).split(":")[0]) == (400, "nonce")

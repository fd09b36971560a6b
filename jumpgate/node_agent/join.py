"""Joining: check the cluster's CA against the pin, then trade the token for an identity."""

from cryptography.hazmat.primitives.asymmetric import ed25519

from jumpgate.node_agent.errors import JoinRefused, PinMismatch
from jumpgate.node_agent.identity import Identity
from jumpgate.protocol import certs
from jumpgate.protocol.client import APIError, Client


def check_pin(client: Client, ca_pin: str) -> dict[str, object]:
    """The cluster's CA keys, once its host CA is shown to match ``ca_pin``."""
    ca = client.call("GET", "/v1/ca")
    actual = certs.ca_pin(ca["host_ca_keys"][0])
    if actual != ca_pin:
        raise PinMismatch(
            f"CA pin mismatch: {client.host_header} presents {actual} but this node pins {ca_pin}; "
            "check the address, or the pin shown by jumpctl status"
        )
    return dict(ca)


def join(
    client: Client, *, token: str, ca_pin: str, nodename: str, insecure: bool
) -> tuple[Identity, ed25519.Ed25519PrivateKey]:
    """A new identity for this node; ``JoinRefused`` when the token is not accepted."""
    check_pin(client, ca_pin)
    key = ed25519.Ed25519PrivateKey.generate()
    body = {
        "token": token,
        "public_key": certs.openssh_public(key.public_key()),
        "nodename": nodename,
    }
    try:
        answer = client.call("POST", "/v1/join", body)
    except APIError as exc:
        if exc.status < 500:
            raise JoinRefused(f"join refused: {exc}") from exc
        raise
    ca = answer["ca"]
    if ca["ca_pin"] != ca_pin:
        raise PinMismatch(f"CA pin mismatch after join: {ca['ca_pin']} is not {ca_pin}")
    identity = Identity(
        host_id=answer["host_id"],
        tenant=ca["tenant"],
        nodename=nodename,
        auth_server=client.host_header,
        ca_pin=ca_pin,
        user_ca_keys=ca["user_ca_keys"],
        host_ca_keys=ca["host_ca_keys"],
        certificate=answer["certificate"],
        insecure=insecure,
    )
    return identity, key

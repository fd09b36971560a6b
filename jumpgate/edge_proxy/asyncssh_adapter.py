"""Every use the proxy makes of asyncssh beyond its documented API, in one place.

- ``SSHServerConnection._cert_options``: the options and extensions of the user's
  certificate, which ``check_certificate_permission`` reads when asyncssh decides whether a
  ``direct-tcpip`` channel may open. There is no public call to widen what one connection
  permits, and the proxy must: a certificate without ``permit-port-forwarding`` still
  reaches its nodes through the proxy (``ssh -J`` and ``jump ssh`` open ``direct-tcpip`` to
  the node's SSH port there), while forwarding itself is the node's to refuse (decision
  0028). ``tests/unit/test_asyncssh_adapter.py`` checks it against ``CHECKED_VERSION``.
- ``SSHServerConnection._validate_openssh_certificate(username, cert)``: checks a
  certificate a client shows (its CA through ``validate_ca_key``, then principals, validity
  and source addresses); the key when all pass, else ``None``. No callback says which
  certificate asyncssh refused; the proxy must know: a client asks whether a key would do
  before it signs anything, so a certificate shown and never signed with was not refused
  (``on_certificate_checked``), while one refused is audited.
"""

from collections.abc import Callable
from typing import Any

import asyncssh

CHECKED_VERSION = "2.24.1"
"""The asyncssh release the private parts above were read in and tested against."""


def permit_the_hop(conn: asyncssh.SSHServerConnection) -> None:
    """Let a certificate without ``permit-port-forwarding`` open ``direct-tcpip`` on ``conn``
    (the proxy's user front, where such a channel only ever reaches a node's SSH port)."""
    options = conn._cert_options
    if options is not None:
        conn._cert_options = {**options, "permit-port-forwarding": True}


def on_certificate_checked(
    conn: asyncssh.SSHServerConnection, then: Callable[[bool], None]
) -> None:
    """Call ``then(passed)`` each time asyncssh has checked an OpenSSH certificate a client
    showed on ``conn``: its CA (through ``validate_ca_key``), then its principals, validity
    and source addresses. Wraps the connection's ``_validate_openssh_certificate``, which
    answers the certificate's key when all pass and ``None`` otherwise, for the query
    without a signature and for the signed request alike."""
    check = conn._validate_openssh_certificate

    async def checked(username: str, cert: Any) -> Any:
        key = await check(username, cert)
        then(key is not None)
        return key

    conn._validate_openssh_certificate = checked  # type: ignore[method-assign]

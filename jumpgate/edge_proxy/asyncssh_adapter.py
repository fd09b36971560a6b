"""Every use the proxy makes of asyncssh beyond its documented API, in one place.

- ``SSHServerConnection._cert_options``: the options and extensions of the user's
  certificate, which ``check_certificate_permission`` reads when asyncssh decides whether a
  ``direct-tcpip`` channel may open. There is no public call to widen what one connection
  permits, and the proxy must: a certificate without ``permit-port-forwarding`` still
  reaches its nodes through the proxy (``ssh -J`` and ``jump ssh`` open ``direct-tcpip`` to
  the node's SSH port there), while forwarding itself is the node's to refuse (decision
  0028). ``tests/unit/test_asyncssh_adapter.py`` checks it against ``CHECKED_VERSION``.
  The same attribute says whether asyncssh accepted the certificate a client showed: it is
  set only once the certificate passed asyncssh's checks (its CA, principals, validity and
  source addresses). A client asks whether a key would do before it signs anything, so a
  certificate shown and never signed with was not refused (``after_certificate_checks``).
"""

import asyncio
from collections.abc import Callable

import asyncssh

CHECKED_VERSION = "2.24.1"
"""The asyncssh release the private part above was read in and tested against."""


def permit_the_hop(conn: asyncssh.SSHServerConnection) -> None:
    """Let a certificate without ``permit-port-forwarding`` open ``direct-tcpip`` on ``conn``
    (the proxy's user front, where such a channel only ever reaches a node's SSH port)."""
    options = conn._cert_options
    if options is not None:
        conn._cert_options = {**options, "permit-port-forwarding": True}


def after_certificate_checks(
    conn: asyncssh.SSHServerConnection, then: Callable[[bool], None]
) -> None:
    """From ``validate_ca_key``, having accepted the CA: call ``then(accepted)`` once
    asyncssh has checked the rest of that certificate (its principals, validity and source
    addresses). asyncssh goes on from ``validate_ca_key`` to those checks without yielding,
    and keeps ``_cert_options`` only if they pass (it clears them on every new auth
    request, so they are read right after)."""
    asyncio.get_running_loop().call_soon(lambda: then(conn._cert_options is not None))

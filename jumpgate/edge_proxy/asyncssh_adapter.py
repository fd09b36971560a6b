"""Every use the proxy makes of asyncssh beyond its documented API, in one place.

- ``SSHServerConnection._cert_options``: the options and extensions of the user's
  certificate, which ``check_certificate_permission`` reads when asyncssh decides whether a
  ``direct-tcpip`` channel may open. There is no public call to widen what one connection
  permits, and the proxy must: a certificate without ``permit-port-forwarding`` still
  reaches its nodes through the proxy (``ssh -J`` and ``jump ssh`` open ``direct-tcpip`` to
  the node's SSH port there), while forwarding itself is the node's to refuse (decision
  0028). ``tests/unit/test_asyncssh_adapter.py`` checks it against ``CHECKED_VERSION``.
"""

import asyncssh

CHECKED_VERSION = "2.24.1"
"""The asyncssh release the private part above was read in and tested against."""


def permit_the_hop(conn: asyncssh.SSHServerConnection) -> None:
    """Let a certificate without ``permit-port-forwarding`` open ``direct-tcpip`` on ``conn``
    (the proxy's user front, where such a channel only ever reaches a node's SSH port)."""
    options = conn._cert_options
    if options is not None:
        conn._cert_options = {**options, "permit-port-forwarding": True}

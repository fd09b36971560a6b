"""The security tests attack a running platform: the e2e fixtures (a daemon, a joined node)."""

from tests.e2e.conftest import cluster, site

__all__ = ["cluster", "site"]

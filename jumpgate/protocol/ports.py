"""Default listeners, numbered as Teleport users know them."""

WEB = 3080
"""Proxy HTTPS: the API under ``/v1/``, health at ``/webapi/ping``."""
SSH = 3023
"""Proxy SSH for users (``ssh -J``, ``jump ssh``)."""
TUNNEL = 3024
"""Proxy reverse-tunnel endpoint for node agents."""
DIAG = 3000
"""Diagnostics (``/healthz``, ``/readyz``, ``/metrics``) when enabled."""

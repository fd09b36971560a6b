"""Default listeners, numbered as Teleport users know them."""

WEB = 3080
"""Proxy HTTPS: the API under ``/v1/``, health at ``/webapi/ping``."""
SSH = 3023
"""Proxy SSH for users (``ssh -J``, ``jump ssh``)."""
TUNNEL = 3024
"""Proxy reverse-tunnel endpoint for node agents."""
DIAG = 3000
"""Diagnostics (``/healthz``, ``/readyz``, ``/metrics``) when enabled."""

NODE_SSH = 3022
"""The port an agent serves SSH on inside its tunnel (no socket listens on it)."""
DIALBACK = 3025
"""Inside the tunnel: where the proxy asks an agent to dial a session's data connection."""
RECORDINGS = 3026
"""Inside the tunnel: where an agent streams its sessions' recordings to the proxy."""
PEER = 3021
"""Proxy to proxy (peering): where a user's proxy reaches the proxy holding a node's tunnel."""

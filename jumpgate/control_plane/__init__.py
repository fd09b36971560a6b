"""The control plane: auth CA, login, certificates, join tokens, resource API.

Domain modules (``tenants``, ``users``, ``login``, ``tokens``, ``ca``, ``authn``) are plain
Python over a state store, a secret box and a clock. ``handlers`` adapts them to HTTP as
Lambda handlers; the embedded daemon calls the same handlers in-process.
"""

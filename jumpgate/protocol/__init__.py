"""The contract shared by every Jumpgate component.

Resource and API models, the routes and the calls made on them (with the client that makes
them), names, durations, certificate extensions, the CA pin, the request signature format,
problem types, ports and versions live here. This package imports no
other component, so a node agent or a laptop can depend on it alone.
"""

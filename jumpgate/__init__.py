"""Jumpgate: a hosted, multi-tenant SSH access platform.

Components (see ARCHITECTURE.md): ``protocol`` is the contract every component shares,
``control_plane`` issues identities and owns state, ``edge_proxy`` is a tenant's public
endpoint, ``node_agent`` runs on customer servers, ``cli`` holds ``jump``, ``jumpctl`` and
the ``jumpgate`` daemon, the one place that composes the others.
"""

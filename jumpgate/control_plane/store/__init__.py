"""The state store: a small key-value interface and its implementations.

``base`` holds the interface every implementation honours (and the conformance suite tests),
``keys`` builds every storage key, ``sqlite`` is the embedded default and ``dynamodb`` the
AWS one.
"""

from jumpgate.control_plane.store.base import (
    PLATFORM,
    CompareAndSwap,
    Create,
    Delete,
    Item,
    Op,
    Page,
    Put,
    Store,
)

__all__ = ["PLATFORM", "CompareAndSwap", "Create", "Delete", "Item", "Op", "Page", "Put", "Store"]

"""Reading a paginated list from the API until a limit: audit events, recordings."""

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from jumpgate.protocol.audit import MAX_SEARCH_LIMIT
from jumpgate.protocol.calls import Call, Query
from jumpgate.protocol.client import Client


class Page(Protocol):
    @property
    def cursor(self) -> str | None: ...


P = TypeVar("P", bound=Page)
T = TypeVar("T")


def collect(
    client: Client,
    call: Callable[[Query], Call[P]],
    items_of: Callable[[P], Sequence[T]],
    params: Query,
    limit: int,
) -> tuple[list[T], bool]:
    """Up to ``limit`` items from pages of ``call``; and whether more matched."""
    items: list[T] = []
    cursor = None
    while len(items) < limit:
        size = min(MAX_SEARCH_LIMIT, limit - len(items))
        query = [*params, ("limit", str(size))] + ([("cursor", cursor)] if cursor else [])
        page = client.send(call(query))
        items += items_of(page)
        cursor = page.cursor
        if cursor is None:
            break
    return items, cursor is not None

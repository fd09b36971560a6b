"""Reading a paginated list from the API until a limit: audit events, recordings."""

import urllib.parse
from typing import Any

from jumpgate.protocol.audit import MAX_SEARCH_LIMIT
from jumpgate.protocol.client import Client


def collect(
    client: Client, path: str, key: str, params: list[tuple[str, str]], limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` items of ``key`` from pages of ``path``; and whether more matched."""
    items: list[dict[str, Any]] = []
    cursor = None
    while len(items) < limit:
        size = min(MAX_SEARCH_LIMIT, limit - len(items))
        query = [*params, ("limit", str(size))] + ([("cursor", cursor)] if cursor else [])
        page = client.call("GET", path, query=urllib.parse.urlencode(query))
        items += page[key]
        cursor = page.get("cursor")
        if cursor is None:
            break
    return items, cursor is not None

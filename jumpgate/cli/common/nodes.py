"""Listing nodes, shared by ``jump ls`` and ``jumpctl nodes ls``."""

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.protocol import calls
from jumpgate.protocol.client import Client


def parse_filters(terms: list[str]) -> dict[str, str]:
    """``key=value`` terms to a label filter."""
    filters = {}
    for term in terms:
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise CLIError(f"filter {term!r} is not key=value, e.g. env=prod")
        filters[key] = value
    return filters


def list_nodes(client: Client, filters: dict[str, str], fmt: str) -> None:
    """Print the cluster's nodes matching every label filter."""
    nodes = client.send(calls.nodes())
    nodes = [n for n in nodes if all(n.labels.get(k) == v for k, v in filters.items())]
    if fmt == "json":
        output.emit_json(nodes)
        return
    output.table(
        ["Node Name", "Address", "Labels", "Status", "ID"],
        [
            (
                n.nodename,
                n.addr or "⟵ tunnel",
                ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())),
                "online" if n.online else "offline",
                n.host_id,
            )
            for n in nodes
        ],
    )

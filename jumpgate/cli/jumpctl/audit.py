"""``jumpctl audit search``: the cluster's audit log, newest first, filtered."""

import argparse
import sys
from typing import Any

from jumpgate.cli.common import output, pages
from jumpgate.cli.common.args import moment, positive
from jumpgate.cli.jumpctl.context import Context
from jumpgate.protocol import calls
from jumpgate.protocol.audit import AuditEvent, AuditPage, table

COMMON = ("type", "code", "time", "id", "tenant", "user", "success")


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="search the audit log")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    types = ", ".join(name for name, _ in table())
    search = asub.add_parser(
        "search",
        help="events of this cluster, newest first",
        epilog=f"event types: {types}",
    )
    search.add_argument("--from", dest="since", help="start: a time or a duration ago (24h)")
    search.add_argument("--to", dest="until", help="end, exclusive (default: now)")
    search.add_argument("--type", action="append", default=[], help="event type (repeatable)")
    search.add_argument("--user", default="", help="only this user's events")
    search.add_argument("--limit", type=positive, default=100, help="events to show (100)")
    search.add_argument("--order", choices=("desc", "asc"), default="desc", help="newest first")
    output.add_format(search)
    search.set_defaults(handler=_search)


def _search(ctx: Context, args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = [("order", args.order)]
    if args.since is not None:
        params.append(("from", moment(args.since).isoformat()))
    if args.until is not None:
        params.append(("to", moment(args.until).isoformat()))
    params += [("type", t) for t in args.type]
    if args.user:
        params.append(("user", args.user))
    events, more = pages.collect(ctx.client, calls.audit_events, _events, params, args.limit)
    rows = [e.model_dump(mode="json") for e in events]
    if args.format == "json":
        output.emit_json(rows)
    else:
        output.table(
            ["Time", "Type", "Code", "User", "Details"],
            [(output.when(e["time"]), e["type"], e["code"], e["user"], _details(e)) for e in rows],
        )
    if more:
        print(
            f"jumpctl: more events match than --limit {args.limit}: raise it or narrow the search",
            file=sys.stderr,
        )
    return 0


def _events(page: AuditPage) -> list[AuditEvent]:
    return page.events


def _details(event: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v}" for k, v in event.items() if k not in COMMON and v not in ("", None, [], {})
    )

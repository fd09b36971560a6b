"""``jumpctl lock``: stop a user, a role, a node or a login at once, live sessions too.

A lock names one target or more (a session must match each named one), why (shown to the
people it stops) and until when (``--ttl`` or ``--expires``; neither: until ``jumpctl rm
lock/ID``). ``jumpctl get locks`` lists them.
"""

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl.context import Context, durations
from jumpgate.cli.jumpctl.kinds import target_text
from jumpgate.protocol import calls, models
from jumpgate.protocol.client import ClientError
from jumpgate.protocol.resources import LockTarget

TARGETS = ("user", "role", "node", "login")


def register(sub: Any) -> None:
    lock = sub.add_parser(
        "lock",
        help="lock out a user, role, node or login: refuse new access, end live sessions",
        epilog="jumpctl get locks lists the locks; jumpctl rm lock/ID lifts one",
    )
    lock.add_argument("--user", default="", help="the user's name")
    lock.add_argument("--role", default="", help="everyone holding this role")
    lock.add_argument("--node", default="", help="a node's name or id")
    lock.add_argument("--login", default="", help="an OS login, on every node")
    lock.add_argument("--message", default="", help="why, shown to whom it stops")
    until = lock.add_mutually_exclusive_group()
    until.add_argument("--ttl", type=durations, help="lift it after this long (e.g. 1h)")
    until.add_argument(
        "--expires", type=expiry, help="lift it then (RFC 3339, e.g. 2027-01-31T18:00:00Z)"
    )
    output.add_format(lock)
    lock.set_defaults(handler=_lock)


def expiry(text: str) -> datetime:
    """``--expires``: a time with its zone, in the future."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use RFC 3339, e.g. 2027-01-31T18:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no zone: end it with Z or +HH:MM")
    if moment <= datetime.now(UTC):
        raise argparse.ArgumentTypeError(f"{text!r} is past: give a time to come, or use --ttl")
    return moment


def request(args: argparse.Namespace) -> models.LockRequest:
    """The lock the flags describe; one line if they name no target."""
    named = {field: getattr(args, field) for field in TARGETS if getattr(args, field)}
    if not named:
        raise CLIError("a lock needs a target: give --user, --role, --node or --login")
    return models.LockRequest(
        target=LockTarget(**named), message=args.message, ttl_seconds=args.ttl, expires=args.expires
    )


def _lock(ctx: Context, args: argparse.Namespace) -> int:
    made = ctx.client.send(calls.add_lock(request(args)))
    if args.format == "json":
        output.emit_json(made)
        return 0
    until = output.when(made.spec.expires) if made.spec.expires else "removed"
    print(f"Lock {made.name} in force on {target_text(made)}, until {until}.")
    print(f"Matching sessions end within seconds; jumpctl rm lock/{made.name} lifts it.")
    node = made.spec.target.node
    if node and not _node_known(ctx, node):
        print(
            f"note: no node {node!r} has joined: the lock stops one that does (a typo? "
            "jumpctl nodes ls lists them)",
            file=sys.stderr,
        )
    return 0


def _node_known(ctx: Context, node: str) -> bool:
    """Whether a node the caller can list is named ``node`` (by name or id, in any case);
    true when the nodes cannot be listed (nothing to say then)."""
    try:
        nodes = ctx.client.send(calls.nodes())
    except (ClientError, CLIError):
        return True
    return any(node.lower() in (n.nodename.lower(), n.host_id.lower()) for n in nodes)

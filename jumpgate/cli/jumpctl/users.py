"""``jumpctl users add|ls|rm``."""

import argparse
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.jumpctl.context import Context, durations


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="invite, list and remove users")
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="invite a user")
    add.add_argument("name")
    add.add_argument("--logins", default="", help="OS logins the user may use, e.g. root,ubuntu")
    add.add_argument("--roles", default="access", help="roles: access, admin (comma-separated)")
    add.add_argument("--ttl", type=durations, default=3600, help="invite lifetime (default 1h)")
    output.add_format(add)
    add.set_defaults(handler=_add)
    ls = usub.add_parser("ls", help="list users")
    output.add_format(ls)
    ls.set_defaults(handler=_ls)
    rm = usub.add_parser("rm", help="remove a user")
    rm.add_argument("name")
    rm.set_defaults(handler=_rm)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.client.call(
        "POST",
        "/v1/users",
        {
            "name": args.name,
            "logins": _csv(args.logins),
            "roles": _csv(args.roles),
            "invite_ttl_seconds": args.ttl,
        },
    )
    insecure = " --insecure" if ctx.insecure else ""
    command = f"jump signup --proxy={ctx.proxy}{insecure} {answer['invite_token']}"
    if args.format == "json":
        output.emit_json({**answer, "signup_command": command})
        return 0
    print(f"User {answer['user']!r} invited; the invite expires {output.when(answer['expires'])}.")
    print("Share this with them:")
    print(f"  {command}")
    return 0


def _ls(ctx: Context, args: argparse.Namespace) -> int:
    users = ctx.client.call("GET", "/v1/users")["users"]
    if args.format == "json":
        output.emit_json(users)
        return 0
    output.table(
        ["User", "Roles", "Logins", "Status", "Created"],
        [
            (
                u["name"],
                ",".join(u["roles"]),
                ",".join(u["logins"]),
                u["status"],
                output.when(u["created"]),
            )
            for u in users
        ],
    )
    return 0


def _rm(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.call("DELETE", f"/v1/users/{args.name}")
    print(f"User {args.name!r} removed.")
    return 0

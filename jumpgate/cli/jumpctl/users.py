"""``jumpctl users add|ls|lock|unlock|rm``."""

import argparse
import re
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.jumpctl.context import Context, durations
from jumpgate.protocol import calls, models
from jumpgate.protocol.models import Role


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="invite, list and remove users")
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="invite a user")
    add.add_argument("name")
    add.add_argument("--logins", default="", help="OS logins the user may use, e.g. root,ubuntu")
    add.add_argument(
        "--roles", type=_roles, default=["access"], help="roles: access, admin (comma-separated)"
    )
    add.add_argument("--ttl", type=durations, default=3600, help="invite lifetime (default 1h)")
    output.add_format(add)
    add.set_defaults(handler=_add)
    ls = usub.add_parser("ls", help="list users")
    output.add_format(ls)
    ls.set_defaults(handler=_ls)
    lock = usub.add_parser(
        "lock", help="lock a user out of the API and of new SSH connections at once"
    )
    lock.add_argument("name")
    lock.add_argument("--message", default="", help="why, shown to the user when refused")
    lock.add_argument(
        "--ttl", type=durations, help="lift the lock after this long (default: never)"
    )
    lock.set_defaults(handler=_lock)
    unlock = usub.add_parser("unlock", help="lift a lock (an admin's or after failed logins)")
    unlock.add_argument("name")
    unlock.set_defaults(handler=_unlock)
    rm = usub.add_parser("rm", help="remove a user")
    rm.add_argument("name")
    rm.set_defaults(handler=_rm)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _roles(text: str) -> list[Role]:
    """``--roles``: checked here, so a typo is named as the flag, not as ``roles.0``."""
    roles = _csv(text)
    for role in roles:
        if role not in set(Role):
            known = " or ".join(r.value for r in Role)
            raise argparse.ArgumentTypeError(f"{role!r} is not a role: use {known}")
    return [Role(role) for role in roles]


def _add(ctx: Context, args: argparse.Namespace) -> int:
    invite = models.UserCreateRequest(
        name=args.name, logins=_csv(args.logins), roles=args.roles, invite_ttl_seconds=args.ttl
    )
    answer = ctx.client.send(calls.add_user(invite))
    insecure = " --insecure" if ctx.insecure else ""
    command = f"jump signup --proxy={ctx.proxy}{insecure} {answer.invite_token}"
    if args.format == "json":
        output.emit_json({**answer.model_dump(mode="json"), "signup_command": command})
        return 0
    print(f"User {answer.user!r} invited; the invite expires {output.when(answer.expires)}.")
    print("Share this with them:")
    print(f"  {command}")
    return 0


def _ls(ctx: Context, args: argparse.Namespace) -> int:
    users = ctx.client.send(calls.users())
    if args.format == "json":
        output.emit_json(users)
        return 0
    output.table(
        ["User", "Roles", "Logins", "Status", "Created"],
        [
            (
                u.name,
                ",".join(u.roles),
                ",".join(u.logins),
                f"locked: {_lock_shown(u.lock)}" if u.lock else u.status,
                output.when(u.created),
            )
            for u in users
        ],
    )
    return 0


_UNTIL = re.compile(r"\(until (\d{4}-\d\d-\d\dT[0-9:.+\-]+)\)")


def _lock_shown(lock: str) -> str:
    """The API's lock (``why (until <ISO 8601>)``) with its expiry as every other time is
    shown to people (``output.when``); ``--format json`` keeps the API's."""
    return _UNTIL.sub(lambda found: f"(until {output.when(found[1])})", lock)


def _rm(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.send(calls.remove_user(args.name))
    print(f"User {args.name!r} removed.")
    return 0


def _lock(ctx: Context, args: argparse.Namespace) -> int:
    body = models.UserLockRequest(message=args.message, ttl_seconds=args.ttl)
    answer = ctx.client.send(calls.lock_user(args.name, body))
    print(f"User {args.name!r} locked: {_lock_shown(answer.lock or '')}.")
    print("Their API calls and new SSH connections are refused; jumpctl users unlock lifts it.")
    return 0


def _unlock(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.send(calls.unlock_user(args.name))
    print(f"User {args.name!r} unlocked.")
    return 0

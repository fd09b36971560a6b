"""``jumpctl users add|update|ls|lock|unlock|rm``."""

import argparse
import re
from typing import Any

from pydantic import TypeAdapter, ValidationError

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl.context import Context, durations
from jumpgate.protocol import calls, invalid, models


def register(sub: Any) -> None:
    users = sub.add_parser("users", help="invite, update, list and remove users")
    usub = users.add_subparsers(dest="users_command", required=True)
    add = usub.add_parser("add", help="invite a user")
    add.add_argument("name")
    add.add_argument("--logins", default="", help="OS logins the user may use, e.g. root,ubuntu")
    add.add_argument(
        "--roles",
        type=role_names,
        default=["access"],
        help="roles, comma-separated (default access; jumpctl get roles lists them)",
    )
    add.add_argument("--ttl", type=durations, default=3600, help="invite lifetime (default 1h)")
    output.add_format(add)
    add.set_defaults(handler=_add)
    update = usub.add_parser("update", help="change a user's roles or logins")
    update.add_argument("name")
    update.add_argument("--set-roles", type=role_names, help="the user's roles from now on")
    update.add_argument(
        "--set-logins", type=_csv, help="the user's OS logins from now on ('' for none)"
    )
    output.add_format(update)
    update.set_defaults(handler=_update)
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


_ROLE_NAME: TypeAdapter[str] = TypeAdapter(models.RoleName)


def role_names(text: str) -> list[str]:
    """``--roles``: names of roles, checked for their form only (the platform knows which
    roles its cluster has and refuses others), so a typo is named as the flag, not as
    ``roles[0]``."""
    roles = _csv(text)
    if not roles:
        raise argparse.ArgumentTypeError("give at least one role, e.g. access")
    for role in roles:
        try:
            _ROLE_NAME.validate_python(role)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(invalid.said(exc.errors()[0])) from None
    return roles


def signup_command(ctx: Context, answer: models.UserCreated) -> str:
    """What the invited user runs to choose a password."""
    insecure = " --insecure" if ctx.insecure else ""
    return f"jump signup --proxy={ctx.proxy}{insecure} {answer.invite_token}"


def print_invite(ctx: Context, answer: models.UserCreated) -> None:
    """What ``users add`` (and ``create`` of a user) says about an invite."""
    print(f"User {answer.user!r} invited; the invite expires {output.when(answer.expires)}.")
    print("Share this with them:")
    print(f"  {signup_command(ctx, answer)}")


def _add(ctx: Context, args: argparse.Namespace) -> int:
    invite = models.UserCreateRequest(
        name=args.name, logins=_csv(args.logins), roles=args.roles, invite_ttl_seconds=args.ttl
    )
    answer = ctx.client.send(calls.add_user(invite))
    if args.format == "json":
        command = signup_command(ctx, answer)
        output.emit_json({**answer.model_dump(mode="json"), "signup_command": command})
        return 0
    print_invite(ctx, answer)
    return 0


def _update(ctx: Context, args: argparse.Namespace) -> int:
    if args.set_roles is None and args.set_logins is None:
        raise CLIError("say what to change: --set-roles, --set-logins or both")
    body = models.UserUpdateRequest(roles=args.set_roles, logins=args.set_logins)
    answer = ctx.client.send(calls.update_user(args.name, body))
    if args.format == "json":
        output.emit_json(answer)
        return 0
    logins = ",".join(answer.logins) or "none"
    print(f"User {answer.name!r} updated: roles {','.join(answer.roles)}; logins {logins}.")
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
                f"locked: {lock_shown(u.lock)}" if u.lock else u.status,
                output.when(u.created),
            )
            for u in users
        ],
    )
    return 0


_UNTIL = re.compile(r"\(until (\d{4}-\d\d-\d\dT[0-9:.+\-]+)\)")


def lock_shown(lock: str) -> str:
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
    print(f"User {args.name!r} locked: {lock_shown(answer.lock or '')}.")
    print("Their API calls and new SSH connections are refused; jumpctl users unlock lifts it.")
    return 0


def _unlock(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.send(calls.unlock_user(args.name))
    print(f"User {args.name!r} unlocked.")
    return 0

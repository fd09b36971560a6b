"""``jumpctl tokens add|ls|rm`` and ``jumpctl nodes add`` (a node token, and how to use it)."""

import argparse
from typing import Any

from jumpgate.cli.common import nodes, output
from jumpgate.cli.jumpctl.context import Context, durations
from jumpgate.protocol import calls, models


def register(sub: Any) -> None:
    nodes = sub.add_parser("nodes", help="join servers to the cluster")
    nsub = nodes.add_subparsers(dest="nodes_command", required=True)
    add_node = nsub.add_parser("add", help="issue a join token and print how to join a server")
    add_node.add_argument("--ttl", type=durations, default=1800, help="token lifetime (30m)")
    add_node.add_argument(
        "--system-roles",
        "--roles",  # its name until decision 0026
        dest="roles",
        default="node",
        help="system roles: what the token joins as (node)",
    )
    add_node.add_argument("--token", help="choose the token's value (at least 16 characters)")
    output.add_format(add_node)
    add_node.set_defaults(handler=_nodes_add)
    ls_nodes = nsub.add_parser("ls", help="list nodes, online or recently seen")
    ls_nodes.add_argument("filters", nargs="*", metavar="key=value", help="label filters")
    output.add_format(ls_nodes)
    ls_nodes.set_defaults(handler=_nodes_ls)
    rm_node = nsub.add_parser("rm", help="remove a node: its tunnel is refused from now on")
    rm_node.add_argument("node", help="node name or uuid")
    rm_node.set_defaults(handler=_nodes_rm)

    tokens = sub.add_parser("tokens", help="issue, list and revoke join tokens")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    add = tsub.add_parser("add", help="issue a join token")
    add.add_argument("--type", required=True, choices=("node",), help="what the token joins")
    add.add_argument("--ttl", type=durations, default=1800, help="token lifetime (30m)")
    add.add_argument("--value", help="choose the token's value (at least 16 characters)")
    output.add_format(add)
    add.set_defaults(handler=_tokens_add)
    ls = tsub.add_parser("ls", help="list join tokens")
    output.add_format(ls)
    ls.set_defaults(handler=_tokens_ls)
    for name in ("rm", "del"):
        rm = tsub.add_parser(name, help="revoke a join token")
        rm.add_argument("token")
        rm.set_defaults(handler=_tokens_rm)


def _create(ctx: Context, roles: list[str], ttl: int, value: str | None) -> models.TokenCreated:
    fields: dict[str, Any] = {"roles": roles, "ttl_seconds": ttl}
    if value:
        fields["token"] = value
    return ctx.client.send(calls.add_token(models.TokenCreateRequest.model_validate(fields)))


TOKEN_VARIABLE = "JUMPGATE_TOKEN"  # noqa: S105 - a variable's name, not a secret
"""Where ``jumpgate start --services=node`` reads its join token from (not the command line,
which every user of the server sees in ``ps``)."""


def join_command(answer: models.TokenCreated, proxy: str) -> tuple[dict[str, str], list[str]]:
    """The environment and command that join a server with the token ``answer`` issued.

    ``--insecure`` only where the platform says its web certificate is self-signed: it
    accepts that certificate and nothing else (the pin still authenticates the join)."""
    argv = [
        "jumpgate",
        "start",
        "--services=node",
        f"--ca-pin={answer.ca_pin}",
        f"--auth-server={proxy}",
    ]
    if answer.self_signed_web_certificate:
        argv.append("--insecure")
    return {TOKEN_VARIABLE: answer.token}, argv


def _nodes_add(ctx: Context, args: argparse.Namespace) -> int:
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    answer = _create(ctx, roles, args.ttl, args.token)
    env, argv = join_command(answer, ctx.proxy)
    command = " ".join([*(f"{k}={v}" for k, v in env.items()), *argv])
    if args.format == "json":
        output.emit_json(
            {
                "token": answer.token,
                "ca_pin": answer.ca_pin,
                "expires": answer.expires,
                "roles": answer.roles,
                "command": command,
                "env": env,
                "argv": argv,
            }
        )
        return 0
    print(f"Join token {answer.token} (node), valid until {output.when(answer.expires)}.")
    print("On the server to join, run:\n")
    print(f"  {command}\n")
    print("The --ca-pin makes the server check that everything it is told comes from this")
    print(f"cluster. The token goes in {TOKEN_VARIABLE} (or --token=/path/to/a/file), never as an")
    print("argument: arguments show in ps to every user of the server.")
    return 0


def _nodes_ls(ctx: Context, args: argparse.Namespace) -> int:
    nodes.list_nodes(ctx.client, nodes.parse_filters(args.filters), args.format)
    return 0


def _nodes_rm(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.send(calls.remove_node(args.node))
    print(f"Node {args.node!r} removed; it must join again with a new token.")
    return 0


def _tokens_add(ctx: Context, args: argparse.Namespace) -> int:
    answer = _create(ctx, [args.type], args.ttl, args.value)
    if args.format == "json":
        output.emit_json(answer)
        return 0
    print(f"The {args.type} token: {answer.token}")
    print(f"It expires {output.when(answer.expires)}; CA pin {answer.ca_pin}.")
    return 0


def _tokens_ls(ctx: Context, args: argparse.Namespace) -> int:
    tokens = ctx.client.send(calls.tokens())
    if args.format == "json":
        output.emit_json(tokens)
        return 0
    output.table(
        ["Token", "System roles", "Expires"],
        [
            (
                t.token,
                ",".join(t.roles),
                "never (static)" if t.static else output.when(t.expires),
            )
            for t in tokens
        ],
    )
    return 0


def _tokens_rm(ctx: Context, args: argparse.Namespace) -> int:
    ctx.client.send(calls.remove_token(args.token))
    print(f"Join token {args.token} revoked; joining with it is refused from now on.")
    return 0

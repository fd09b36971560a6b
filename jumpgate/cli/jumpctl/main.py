"""``jumpctl``: administer a cluster remotely with your ``jump login`` credentials."""

import argparse
import sys

from jumpgate.cli.common import version
from jumpgate.cli.common.args import Parser
from jumpgate.cli.common.run import run
from jumpgate.cli.jumpctl import (
    audit,
    context,
    edit,
    locks,
    recordings,
    resources,
    status,
    tokens,
    users,
)


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="jumpctl", description="Administer a Jumpgate cluster.")
    top.add_argument("--auth-server", help="cluster address (default: your jump login profile)")
    top.add_argument("--insecure", action="store_true", help="accept a self-signed certificate")
    sub = top.add_subparsers(dest="command", required=True)
    for group in (status, resources, edit, locks, users, tokens, audit, recordings):
        group.register(sub)
    version.register(top, sub)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``jumpctl``."""
    args = parser().parse_args(argv)
    if args.command == "version":  # needs no login
        return run("jumpctl", lambda: version.show("jumpctl", args.format))

    def command() -> int:
        ctx = context.from_args(args)
        with ctx.client:  # one connection for the command's calls, closed at its end
            result: int = args.handler(ctx, args)
        return result

    return run("jumpctl", command)


if __name__ == "__main__":
    sys.exit(main())

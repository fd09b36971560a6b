"""``jumpctl status``: cluster name, CAs (the active key, and any other key each trusts) and
the CA pin agents check."""

import argparse
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.jumpctl.context import Context
from jumpgate.protocol import calls


def register(sub: Any) -> None:
    status = sub.add_parser("status", help="cluster name, CA key types and the CA pin")
    output.add_format(status)
    status.set_defaults(handler=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    answer = ctx.client.send(calls.status())
    if args.format == "json":
        output.emit_json(answer)
        return 0
    print(f"Cluster  {answer.cluster_name}")
    print(f"Version  {answer.server_version}")
    for ca in answer.cas:
        print(f"{ca.kind.capitalize()} CA  {ca.key_type}  {ca.fingerprint}")
        # The keys trusted besides the active one (a rotation under way); none in standby
        for fingerprint in ca.trusted:
            if fingerprint != ca.fingerprint:
                print(f"         also trusted  {fingerprint}")
    print(f"CA pin   {answer.ca_pin}")
    return 0

"""``jumpctl get|create|rm``: the cluster's resources as documents (YAML by default), as
``tctl`` speaks them.

``create`` reads every document of its file and checks them all (their fields, then against
the cluster: a name taken, a role no one made) before it sends any, so a file with one bad
document changes nothing. ``edit`` is in ``edit``.
"""

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl import documents, kinds
from jumpgate.cli.jumpctl.context import Context
from jumpgate.cli.jumpctl.kinds import DocumentError, Kind, UserDocument
from jumpgate.protocol.client import Client

FORMATS = ("yaml", "json", "text")


def register(sub: Any) -> None:
    get = sub.add_parser(
        "get",
        help="show resources as documents",
        epilog=f"kinds: {known()} (plural too: roles, users...)",
    )
    get.add_argument("resource", metavar="KIND[/NAME]", help="e.g. roles, role/access, all")
    get.add_argument("--format", choices=FORMATS, default="yaml", help="output format (yaml)")
    get.set_defaults(handler=_get)

    create = sub.add_parser(
        "create",
        help="create resources from a YAML file (-f: replace them)",
        epilog="kinds: role, user, lock; several documents per file, separated by ---; "
        "a user's status is the platform's and is ignored",
    )
    create.add_argument("file", metavar="FILE", help="YAML documents, or - for stdin")
    create.add_argument(
        "-f",
        "--force",
        action="store_true",
        help="replace roles and update users that exist (a metadata.revision is checked)",
    )
    create.set_defaults(handler=_create)

    rm = sub.add_parser("rm", help="remove a resource", epilog=f"kinds: {', '.join(kinds.KINDS)}")
    rm.add_argument("resource", metavar="KIND/NAME", help="e.g. role/dba, lock/ID")
    rm.set_defaults(handler=_rm)


def _get(ctx: Context, args: argparse.Namespace) -> int:
    ref = reference(args.resource, need_name=False)
    chosen = [ref.kind] if ref.kind is not None else list(kinds.KINDS.values())
    if ref.name:
        found = [(chosen[0], chosen[0].item(ctx.client, ref.name))]
    else:
        found = [(kind, item) for kind in chosen for item in kind.items(ctx.client)]
    shown = [kind.document(item) for kind, item in found]
    if args.format == "yaml":
        sys.stdout.write(documents.dump_all(shown))
        if not shown:  # said beside the output, which stays no document at all
            print(f"no {ref.kind.plural if ref.kind else 'resources'} found", file=sys.stderr)
    elif args.format == "json":
        output.emit_json(shown[0] if ref.name else shown)
    else:
        for kind in chosen:
            if ref.kind is None:  # all: a heading over each kind's table
                print(f"{kind.plural.capitalize()}:")
            output.table(kind.headers, [kind.row(item) for k, item in found if k is kind])
            if ref.kind is None:
                print()
    return 0


def known() -> str:
    """The kinds, as an error lists them."""
    return ", ".join(kinds.KINDS) + " or all"


def kind_named(text: str, *, allow_all: bool = False) -> Kind | None:
    """The kind ``text`` names (singular or plural); ``None`` for ``all`` when allowed."""
    word = text.strip().lower()
    if allow_all and word == "all":
        return None
    for kind in kinds.KINDS.values():
        if word in (kind.name, kind.plural):
            return kind
    names = list(kinds.KINDS)
    listed = known() if allow_all else ", ".join(names[:-1]) + f" or {names[-1]}"
    raise CLIError(f"unknown kind {text!r}: use {listed}")


@dataclass(frozen=True)
class Reference:
    """``KIND[/NAME]`` as given on the command line."""

    kind: Kind | None  # None: every kind (``all``)
    name: str


def reference(text: str, *, need_name: bool) -> Reference:
    """``KIND/NAME`` (or ``KIND`` and ``all`` unless ``need_name``) parsed, or a one-line
    error saying what to write."""
    word, _, name = text.partition("/")
    kind = kind_named(word, allow_all=not need_name)
    if need_name and not name:
        plural = kind.plural if kind is not None else word
        raise CLIError(f"name the resource: {word}/NAME (jumpctl get {plural} lists them)")
    if kind is None and name:
        raise CLIError("all takes no name: jumpctl get all")
    return Reference(kind, name)


@dataclass(frozen=True)
class Parsed:
    """A document read and validated, and where it stood."""

    kind: Kind
    value: Any  # what ``kind.apply`` sends
    name: str
    number: int  # the document's place in its file, from 1
    where: str  # ``FILE: document N (role 'x')``, for errors


def parse_all(text: str, source: str) -> list[Parsed]:
    """Every document of ``text`` validated, or a ``CLIError`` naming the first bad one
    (its number, kind and name) and its field."""
    parsed = []
    for number, raw in documents.load_all(text, source):
        where = f"{source}: document {number}"
        word = raw.get("kind")
        if word is None:
            raise CLIError(f"{where}: kind is required: use {_writable()}")
        kind = kinds.KINDS.get(word) if isinstance(word, str) else None
        if kind is None:
            raise CLIError(f"{where}: unknown kind {word!r}: use {_writable()}")
        metadata = raw.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        where += f" ({kind.name} {name!r})" if isinstance(name, str) else f" ({kind.name})"
        try:
            value = kind.parse(raw)
        except DocumentError as exc:
            raise CLIError(f"{where}: {exc}") from None
        parsed.append(Parsed(kind, value, getattr(value, "name", ""), number, where))
    return parsed


def _writable() -> str:
    return ", ".join(kinds.WRITABLE[:-1]) + f" or {kinds.WRITABLE[-1]}"


@dataclass(frozen=True)
class Cluster:
    """What ``create`` checks a file against: the names the cluster has."""

    roles: frozenset[str]
    users: frozenset[str]


@dataclass(frozen=True)
class Step:
    parsed: Parsed
    exists: bool


def plan(parsed: Sequence[Parsed], cluster: Cluster, *, replace: bool) -> list[Step]:
    """The steps of ``create`` in the file's order, or a ``CLIError`` for the first document
    the cluster would refuse; nothing is sent before every document passed."""
    seen: dict[tuple[str, str], int] = {}
    made_roles = {p.name for p in parsed if p.kind.name == "role"}
    existing = {"role": cluster.roles, "user": cluster.users}
    steps = []
    for p in parsed:
        key = (p.kind.name, p.name)
        if p.name and p.kind.name in existing and key in seen:
            raise CLIError(f"{p.where}: the same {p.kind.name} as document {seen[key]}: keep one")
        seen[key] = p.number
        exists = p.name in existing.get(p.kind.name, ())
        if exists and not replace:
            fix = "replace it" if p.kind.name == "role" else "change their roles and logins"
            raise CLIError(
                f"{p.where}: {p.kind.name} {p.name!r} exists already: use jumpctl create -f "
                f"to {fix}"
            )
        if isinstance(p.value, UserDocument):
            for index, role in enumerate(p.value.spec.roles):
                if role not in cluster.roles and role not in made_roles:
                    raise CLIError(
                        f"{p.where}: spec.roles[{index}]: no role {role!r} in this cluster: "
                        "write it in the file or create it first (jumpctl get roles lists them)"
                    )
        steps.append(Step(p, exists))
    return steps


def _names(items: Iterable[Any]) -> frozenset[str]:
    return frozenset(item.name for item in items)


def cluster_of(client: Client, parsed: Sequence[Parsed]) -> Cluster:
    """The names ``plan`` needs, read only when the file has roles or users."""
    if not any(p.kind.name in ("role", "user") for p in parsed):
        return Cluster(frozenset(), frozenset())
    roles = kinds.KINDS["role"].items(client)
    users = kinds.KINDS["user"].items(client)
    return Cluster(_names(roles), _names(users))


def read_source(name: str) -> tuple[str, str]:
    """The text of FILE (``-``: stdin) and how errors name it."""
    if name == "-":
        return sys.stdin.read(), "stdin"
    try:
        return Path(name).read_text(encoding="utf-8"), name
    except OSError as exc:
        raise CLIError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CLIError(f"{name}: not UTF-8 text: give a YAML file") from None


def _create(ctx: Context, args: argparse.Namespace) -> int:
    text, source = read_source(args.file)
    parsed = parse_all(text, source)
    steps = plan(parsed, cluster_of(ctx.client, parsed), replace=args.force)
    for step in steps:
        step.parsed.kind.apply(ctx, step.parsed.value, replace=args.force, exists=step.exists)
    return 0


def _rm(ctx: Context, args: argparse.Namespace) -> int:
    ref = reference(args.resource, need_name=True)
    assert ref.kind is not None  # need_name refuses all
    print(ref.kind.remove(ctx.client, ref.name))
    return 0

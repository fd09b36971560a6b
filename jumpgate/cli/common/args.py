"""Command-line parsing shared by ``jump``, ``jumpctl`` and ``jumpgate``."""

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

from jumpgate.cli.common.errors import CLIError
from jumpgate.protocol.durations import parse_duration


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: what was wrong, and where the usage is.

    Flags are taken by their whole name only: with abbreviations, ``--form 1h`` (a typo of
    ``--from``) was read as ``--format``, and a flag added later could change what an old
    abbreviation in a script meant. Subcommands are parsed by ``Subcommand`` (every level of
    ``add_subparsers``), so a flag one of them does not know is refused by it, naming its own
    help, rather than passed up to the top parser."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", Subcommand)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> NoReturn:
        for action in self._actions:
            # argparse names a missing subcommand by its internal dest (``nodes_command``)
            required = message.removeprefix("the following arguments are required: ")
            subparsers = isinstance(action, argparse._SubParsersAction)
            if subparsers and action.dest in required.split(", "):
                message = f"choose a command: {', '.join(action.choices or ())}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Subcommand(Parser):
    """A subcommand's parser: arguments left over are its error, not the top parser's."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def moment(text: str) -> datetime:
    """``--from``/``--to``: a time (``2026-11-21``, ``2026-11-21T09:30``) or a duration ago."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CLIError(
            f"{text!r} is not a time: use e.g. 2026-11-21, 2026-11-21T09:30 or 2h (ago)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cluster_address(text: str, flag: str) -> str:
    """``HOST:PORT`` of a cluster's web endpoint as ``flag`` gave it: a URL someone copied
    from a browser (``https://acme.example.sh:3080/``) is taken for its address; another
    scheme or a path is refused in one line."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    address, slash, path = rest.partition("/")
    if scheme and scheme.lower() != "https":
        raise CLIError(
            f"{flag}: the platform speaks HTTPS only: give {address} (or https://{address})"
        )
    if slash and path:
        raise CLIError(f"{flag}: give the cluster's address alone, {address}, not a path")
    return address


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value

"""Printing for people (aligned tables) and for scripts (``--format json``)."""

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter

_MOMENT = TypeAdapter(datetime)


def emit_json(value: Any) -> None:
    """One JSON document on stdout; models (``protocol.models``) as the API writes them."""
    json.dump(value, sys.stdout, indent=2, default=_plain)
    sys.stdout.write("\n")


def _plain(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def iso(moment: datetime) -> str:
    """A time in ISO 8601 as the API writes it (``Z`` for UTC)."""
    return str(_MOMENT.dump_python(moment, mode="json"))


def printable(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1: escape sequences, bells, carriage
    returns, newlines) shown as its ``\\x..`` escape: what others wrote (a user's command in
    an audit event, a node's labels) must not drive the terminal of whoever reads it."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode() for c in text
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell, with a rule under the headers; cells are shown
    ``printable``."""
    cells = [[printable(str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def when(value: str | datetime | None) -> str:
    """A timestamp as people read it: UTC, to the second."""
    if value is None:
        return "never"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def counted(number: int, noun: str) -> str:
    """``1 part``, ``2 parts``: a count with its noun, plural when it is not one."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def add_format(parser: Any) -> None:
    """The ``--format text|json`` flag every read command takes."""
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")

"""``jumpctl edit KIND/NAME``: a role or a user in ``$EDITOR``, sent back only if valid and
only if no one changed it meanwhile.

The document is fetched with its revision (kept here, not in the file), written as ``get``
prints it, and handed to ``VISUAL`` or ``EDITOR`` (``vi`` if neither is set). What comes
back is checked as ``create`` checks a file; a bad document, or a change someone made since
(the platform refuses the revision), is one line and changes nothing. The edited file is
kept then, so the work is not lost; otherwise it is removed.
"""

import argparse
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl import documents, resources
from jumpgate.cli.jumpctl.context import Context
from jumpgate.cli.jumpctl.kinds import DocumentError, Kind
from jumpgate.protocol.client import APIError

EDITABLE = ("role", "user")


def register(sub: Any) -> None:
    edit = sub.add_parser(
        "edit",
        help="edit a role or a user in $EDITOR",
        epilog="the editor is $VISUAL, else $EDITOR, else vi",
    )
    edit.add_argument("resource", metavar="KIND/NAME", help="role/NAME or user/NAME")
    edit.set_defaults(handler=_edit)


def editor() -> list[str]:
    """The editor's command line, from ``VISUAL`` or ``EDITOR`` (split as a shell would)."""
    chosen = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        argv = shlex.split(chosen)
    except ValueError as exc:
        raise CLIError(
            f"cannot read the editor's command {chosen!r} ({exc}): fix VISUAL or EDITOR"
        ) from None
    if not argv:
        raise CLIError("VISUAL or EDITOR is blank: set it to an editor, e.g. EDITOR=nano")
    return argv


def _run_editor(path: Path) -> None:
    argv = editor()
    try:
        done = subprocess.run([*argv, str(path)], check=False)
    except OSError as exc:
        raise CLIError(
            f"cannot run the editor {argv[0]!r} ({exc.strerror or exc}): set VISUAL or EDITOR"
        ) from None
    if done.returncode != 0:
        raise CLIError(f"the editor exited with {done.returncode}: nothing changed")


def edited(kind: Kind, name: str, text: str) -> Any:
    """The edited document as ``kind.update`` sends it, or a ``CLIError``: one document of
    the same kind and name, valid."""
    source = f"{kind.name}/{name}"
    found = documents.load_all(text, source)
    if len(found) != 1:
        raise CLIError(f"{source}: {len(found)} documents: keep the one being edited")
    raw = found[0][1]
    if raw.get("kind") != kind.name:
        raise CLIError(f"{source}: kind: must stay {kind.name}, not {raw.get('kind')!r}")
    try:
        value = kind.parse(raw)
    except DocumentError as exc:
        raise CLIError(f"{source}: {exc}") from None
    if value.name != name:
        raise CLIError(
            f"{source}: metadata.name: stays {name!r} in an edit: "
            f"for a new {kind.name}, use jumpctl create"
        )
    return value


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CLIError(f"{path.name}: not UTF-8 text") from None
    except OSError as exc:
        raise CLIError(f"cannot read back {path} ({exc.strerror or exc})") from None


def _edit(ctx: Context, args: argparse.Namespace) -> int:
    ref = resources.reference(args.resource, need_name=True)
    kind = ref.kind
    assert kind is not None  # need_name refuses all
    if kind.name not in EDITABLE:
        raise CLIError(
            f"{kind.plural} are not edited here: jumpctl edit takes role/NAME or user/NAME"
        )
    item = kind.item(ctx.client, ref.name)
    revision = kind.revision(item)
    handle, name = tempfile.mkstemp(prefix=f"jumpctl-{kind.name}-", suffix=".yaml")
    path = Path(name)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(documents.dump(kind.document(item)))
    try:
        _run_editor(path)
    except CLIError:
        path.unlink(missing_ok=True)
        raise
    keep = f"; nothing changed, your edit is kept in {path}"
    try:
        value = edited(kind, ref.name, _read(path))
    except CLIError as exc:
        raise CLIError(f"{exc}{keep}") from None
    if kind.unchanged(item, value):
        path.unlink()
        print(f"{kind.name} {ref.name!r}: no change")
        return 0
    try:
        kind.update(ctx, value, revision)
    except APIError as exc:
        if exc.status == 409:
            raise CLIError(
                f"{kind.name} {ref.name!r} changed since you opened it: run jumpctl edit again"
                f" (your edit is kept in {path})"
            ) from None
        raise CLIError(f"{exc}{keep}") from None
    path.unlink()
    print(f"{kind.name.capitalize()} {ref.name!r} updated.")
    return 0

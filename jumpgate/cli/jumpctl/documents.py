"""Resources as YAML: the one place ``jumpctl`` reads and writes it.

Written documents are canonical, so what ``jumpctl get`` prints round-trips byte for byte:
every field in the model's order (defaults too), block style, no line wrapping, documents
separated by ``---``. Read documents are plain mappings, numbered from 1 as they stand in
the file, for the kinds to validate (``kinds``).
"""

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from jumpgate.cli.common.errors import CLIError

SEPARATOR = "---\n"


class _Loader(yaml.SafeLoader):
    """YAML's safe subset, refusing a key written twice in one mapping (plain PyYAML keeps
    the last, and the first is lost without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a key no document has: the model refuses it, by name
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is written twice: keep one", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def dump(document: Mapping[str, Any]) -> str:
    """One document as canonical YAML."""
    return yaml.safe_dump(
        dict(document),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 16,  # never fold a long value: a fold is a change people did not make
    )


def dump_all(documents: Iterable[Mapping[str, Any]]) -> str:
    """Documents as canonical YAML, ``---`` between them (nothing for none)."""
    return SEPARATOR.join(dump(d) for d in documents)


def load_all(text: str, source: str) -> list[tuple[int, dict[str, Any]]]:
    """The documents of ``text`` with their numbers; empty ones (a trailing ``---``) are
    skipped but counted. ``source`` names the file in errors."""
    found: list[tuple[int, dict[str, Any]]] = []
    number = 0
    try:
        loaded = yaml.load_all(text, Loader=_Loader)
        for number, document in enumerate(loaded, start=1):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise CLIError(
                    f"{source}: document {number}: must be a mapping with kind, version, "
                    "metadata and spec, not a YAML "
                    f"{type(document).__name__}"
                )
            found.append((number, document))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else f"document {number + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CLIError(f"{source}: {where}: not valid YAML ({problem})") from None
    if not found:
        raise CLIError(f"{source}: no documents in it: write one with kind, metadata and spec")
    return found

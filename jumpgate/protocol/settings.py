"""What every configuration model shares: the daemon's ``jumpgate.yaml``, the node agent's
settings and the control-plane functions' environment are pydantic models built on
``SettingsModel``, with the value types below and ONE formatter for their errors.

A person who mistypes a value sees one line naming the key path and what to write instead
(``connection_limits.header_timeout: invalid duration '10': use a number and a unit, e.g.
30s, 5m, 12h``), never a traceback and never pydantic's own multi-line report: ``one_line``
turns a ``ValidationError`` into that line. The checks live on the models, so a value that
reaches a component is already of its type (durations are ``timedelta``, parsed once).
"""

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, ValidationError

from jumpgate.protocol.invalid import key_path, said

__all__ = ["Flag", "SettingsModel", "key_path", "number", "one_line", "text_list", "whole"]


class SettingsModel(BaseModel):
    """A frozen, validated settings model: unknown keys are refused (a misspelt key is an
    error, not a silently ignored setting), and a number where text goes is taken as its
    text (YAML reads ``nodename: 1234`` as a number)."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


Flag = StrictBool
"""``true`` or ``false`` only: ``insecure: 1`` is more likely a mistake than a yes."""


def whole(least: int, most: int | None = None, *, text: bool = False) -> BeforeValidator:
    """For ``Annotated[int, whole(1, 256)]``: a whole number from ``least`` (to ``most``);
    ``text``: digits in text are taken too (environment variables are all text)."""

    def check(value: object) -> int:
        if text and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        span = f" from {least} to {most}" if most is not None else f", {least} or more"
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < least
            or (most is not None and value > most)
        ):
            raise ValueError(f"{value!r} must be a whole number{span}")
        return value

    return BeforeValidator(check)


def number(least: float, *, note: str = "") -> BeforeValidator:
    """For ``Annotated[float, number(0)]``: a number (whole or not) of at least ``least``;
    ``note`` says what the bound means (``0: no limit``)."""

    def check(value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool) or value < least:
            said = f" ({note})" if note else ""
            raise ValueError(f"{value!r} must be a number, {least:g} or more{said}")
        return float(value)

    return BeforeValidator(check)


def text_list(value: object) -> tuple[str, ...]:
    """A key that takes one text or a list of texts (``audit_events_uri``)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    shown = list(value) if isinstance(value, list | tuple) else value
    raise ValueError(f"must be a list of text, not {shown!r}")


def one_line(exc: ValidationError, model: type[BaseModel], *, unknown: str = "config") -> str:
    """The first error of ``exc`` as one line naming its key path (``storage.region``,
    ``static_tokens[0].token``); unknown keys of one mapping are named together.
    ``unknown`` names the whole for unknown top-level keys (``unknown config key(s): x``)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        names = [
            str(e["loc"][-1])
            for e in errors
            if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) == parent
        ]
        listed = ", ".join(sorted(names))
        if not parent:
            meant = [
                close[0]
                for name in sorted(names)
                if (close := difflib.get_close_matches(name, list(model.model_fields), n=1))
            ]
            hint = f" (did you mean {', '.join(meant)}?)" if meant else ""
            return f"unknown {unknown} key(s): {listed}{hint}"
        within = _model_at(model, parent)
        allowed = f"; use {', '.join(within.model_fields)}" if within else ""
        return f"{key_path(parent)}: unknown key(s) {listed}{allowed}"
    message = _message(first, _model_at(model, loc))
    where = key_path(loc)
    line = f"{where}: {message}" if where else message
    return line.replace("\n", " ")


def _message(error: Any, within: type[BaseModel] | None) -> str:
    kind = error["type"]
    if kind in ("model_type", "model_attributes_type", "dataclass_type") and within is not None:
        return f"must be a mapping of {', '.join(within.model_fields)}"
    return said(error)


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc``, if one does."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        found = _inner_model(current)
        if found is None:
            return None
        field = found.model_fields.get(part) or next(
            (f for f in found.model_fields.values() if f.validation_alias == part), None
        )
        if field is None:
            return None
        current = field.annotation
    return _inner_model(current)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """``annotation`` if it is a model, or the model inside ``tuple[M, ...]``/``M | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, tuple, list, Annotated):
        for inner in get_args(annotation):
            found = _inner_model(inner)
            if found is not None:
                return found
    return None

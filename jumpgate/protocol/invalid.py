"""A value the models refuse, said in words: what is wrong and what to write instead.

Every refusal a person may read goes through ``said``: the CLIs' lines for a request body
they would not send (``protocol.client.invalid_detail``), the platform's 400 detail for one
it will not take, and the configuration's one line (``protocol.settings.one_line``). Each
kind of pydantic error has one wording here, so a field gets a readable message without a
message of its own; a field whose rule pydantic can only state as a pattern or a number of
seconds declares the rule in words where its type is declared (``rule``)::

    OTP = Annotated[str, Field(pattern=r"^[0-9]{6}$"), rule("the 6 digits your app shows")]

    otp: must be the 6 digits your app shows, not '1'

never pydantic's ``otp: String should match pattern '^[0-9]{6}$'``.
"""

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError

from jumpgate.protocol.durations import format_duration

__all__ = ["first_line", "key_path", "line", "rule", "said"]

RULE = "rule"
"""The error type of a refusal ``rule`` words: its message is said as it is."""

Shown = Literal["value", "length", "duration"]


def rule(words: str, *, show: Shown = "value") -> WrapValidator:
    """For ``Annotated[T, Field(...), rule("...")]``: whatever the field's constraints refuse
    is said as ``must be <words>``, followed by what was given: the value itself, only its
    length (``show="length"``: a secret is not repeated), or a number of seconds as a
    duration (``show="duration"``: ``1000d``, as it was typed)."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError(
                RULE, "must be {words}{given}", {"words": words, "given": _given(value, show)}
            ) from None

    return WrapValidator(check)


def _given(value: Any, show: Shown) -> str:
    if show == "length":
        return f" ({len(value)} given)" if isinstance(value, str) else " (not text)"
    if show == "duration" and isinstance(value, int) and not isinstance(value, bool):
        return f", not {format_duration(timedelta(seconds=value))}"
    return f", not {_short(value)}"


def _short(value: Any) -> str:
    """``value`` as a person would recognise what they gave, cut at 40 characters."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _choices(ctx: dict[str, Any]) -> str:
    return str(ctx.get("expected", "")).replace("'", "")


def _count(ctx: dict[str, Any]) -> str:
    actual = ctx.get("actual_length")
    return f"{actual or 'none'} given" if actual is not None else "given"


_WORDS: dict[str, Callable[[Any, dict[str, Any]], str]] = {
    "missing": lambda _v, _c: "is required",
    "extra_forbidden": lambda _v, _c: "unknown field: see the API's /v1/openapi.json",
    "string_type": lambda v, _c: f"must be text, not {_short(v)}",
    "string_unicode": lambda _v, _c: "must be text (UTF-8)",
    "string_too_short": lambda v, c: (
        "must not be empty"
        if c.get("min_length") == 1
        else f"must be at least {c.get('min_length')} characters ({len(v)} given)"
    ),
    "string_too_long": lambda v, c: (
        f"must be at most {c.get('max_length')} characters ({len(v)} given)"
    ),
    "string_pattern_mismatch": lambda v, _c: (
        f"{_short(v)} is not of the form it takes (see the API's /v1/openapi.json)"
    ),
    "int_type": lambda v, _c: f"must be a whole number, not {_short(v)}",
    "int_parsing": lambda v, _c: f"must be a whole number, not {_short(v)}",
    "int_from_float": lambda v, _c: f"must be a whole number, not {_short(v)}",
    "float_type": lambda v, _c: f"must be a number, not {_short(v)}",
    "float_parsing": lambda v, _c: f"must be a number, not {_short(v)}",
    "bool_type": lambda v, _c: f"must be true or false, not {_short(v)}",
    "bool_parsing": lambda v, _c: f"must be true or false, not {_short(v)}",
    "greater_than_equal": lambda v, c: f"must be at least {c.get('ge')}, not {_short(v)}",
    "greater_than": lambda v, c: f"must be more than {c.get('gt')}, not {_short(v)}",
    "less_than_equal": lambda v, c: f"must be at most {c.get('le')}, not {_short(v)}",
    "less_than": lambda v, c: f"must be less than {c.get('lt')}, not {_short(v)}",
    "list_type": lambda v, _c: f"must be a list, not {_short(v)}",
    "tuple_type": lambda v, _c: f"must be a list, not {_short(v)}",
    "set_type": lambda v, _c: f"must be a list, not {_short(v)}",
    "dict_type": lambda v, _c: f"must be a mapping, not {_short(v)}",
    "too_short": lambda _v, c: f"must list at least {c.get('min_length')} ({_count(c)})",
    "too_long": lambda _v, c: f"must list at most {c.get('max_length')} ({_count(c)})",
    "literal_error": lambda v, c: f"{_short(v)} is not {_choices(c)}",
    "enum": lambda v, c: f"{_short(v)} is not {_choices(c)}",
    "model_type": lambda v, _c: f"must be a mapping of its fields, not {_short(v)}",
    "model_attributes_type": lambda v, _c: f"must be a mapping of its fields, not {_short(v)}",
    "dataclass_type": lambda v, _c: f"must be a mapping of its fields, not {_short(v)}",
    "datetime_type": lambda v, _c: f"must be a time (ISO 8601), not {_short(v)}",
    "datetime_parsing": lambda v, _c: f"must be a time (ISO 8601), not {_short(v)}",
    "datetime_from_date_parsing": lambda v, _c: f"must be a time (ISO 8601), not {_short(v)}",
    "timezone_aware": lambda v, _c: f"must be a time with its zone (Z or +00:00), not {v!r}",
    "path_type": lambda v, _c: f"must be a path, not {_short(v)}",
    "json_invalid": lambda _v, _c: "is not valid JSON",
    "json_type": lambda v, _c: f"must be JSON text, not {_short(v)}",
    "union_tag_invalid": lambda _v, c: f"{_short(c.get('tag'))} is not {_choices(c)}",
    "union_tag_not_found": lambda _v, c: f"needs its {c.get('discriminator', 'type')}",
}


def said(error: Any) -> str:
    """One error of ``ValidationError.errors()`` in words, without its location."""
    kind = str(error["type"])
    message = str(error.get("msg", ""))
    if kind in (RULE, "value_error", "assertion_error"):
        return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    words = _WORDS.get(kind)
    if words is not None:
        return words(error.get("input"), dict(error.get("ctx") or {}))
    # A kind no field of ours produces today: say what was given, not pydantic's phrasing.
    return f"{_short(error.get('input'))} is not a value it takes ({kind})"


def key_path(loc: Sequence[int | str]) -> str:
    """``("static_tokens", 0, "token")`` as people write it: ``static_tokens[0].token``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line(error: Any, *, skip: Sequence[str] = ()) -> str:
    """One error as a line naming its key path (``roles[0]: 'x' is not admin or access``);
    ``skip``: leading location parts that are no key of the body (``body``)."""
    loc = list(error.get("loc", ()))
    while loc and loc[0] in skip:
        loc.pop(0)
    where = key_path(loc)
    message = said(error)
    return (f"{where}: {message}" if where else message).replace("\n", " ")


def first_line(exc: ValidationError) -> str:
    """The first error of ``exc`` as one line (``line``)."""
    errors = exc.errors(include_url=False)
    return line(errors[0]) if errors else "invalid value"

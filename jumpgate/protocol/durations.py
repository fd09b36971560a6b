"""Durations as people type them: ``90s``, ``5m``, ``12h``, ``1h30m``, ``7d``; and the
settings type that parses them once, into a ``timedelta``."""

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration; raise ``ValueError`` with a message a person can act on."""
    cleaned = text.strip().lower()
    pos = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 30s, 5m, 12h")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"invalid duration {text[:40]!r}: longer than any duration") from None


def format_duration(delta: timedelta) -> str:
    """The short form of a duration, largest units first (``1h30m``, ``45s``)."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


def _setting(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # YAML reads ``10`` as a number: refused for its missing unit
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {value!r}")
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_setting)]
"""A settings value that is a duration: written ``90s``/``5m``/``12h``/``1h30m``/``7d``,
held as a ``timedelta``, parsed once when the settings are loaded."""


def within(
    least: timedelta | None = None,
    most: timedelta | None = None,
    *,
    positive: bool = False,
    why: str = "must be",
) -> AfterValidator:
    """For ``Annotated[Duration, within(...)]``: the bounds of a duration setting. ``why``
    starts the message of a value under ``least`` (``keep audit events at least 1d``)."""

    def bound(value: timedelta) -> timedelta:
        if positive and value <= timedelta(0):
            raise ValueError("must be more than 0s")
        if least is not None and most is not None and not least <= value <= most:
            raise ValueError(f"must be from {format_duration(least)} to {format_duration(most)}")
        if least is not None and value < least:
            raise ValueError(f"{why} at least {format_duration(least)}")
        if most is not None and value > most:
            raise ValueError(f"must be at most {format_duration(most)}")
        return value

    return AfterValidator(bound)

"""Durations as people type them: ``90s``, ``5m``, ``12h``, ``1h30m``, ``7d``."""

import re
from datetime import timedelta

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
    return timedelta(seconds=total)


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

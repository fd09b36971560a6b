"""Node labels: static ``env=prod`` and dynamic ``arch=[1h:"uname -m"]`` (a command's output,
refreshed on its period, at least a minute)."""

import asyncio
import re
import shlex
from dataclasses import dataclass
from datetime import timedelta

from jumpgate.protocol.durations import parse_duration

MIN_PERIOD = timedelta(minutes=1)
_DYNAMIC = re.compile(r"^\[(?P<period>[0-9a-z]+):(?P<command>.*)\]$")
_KEY = re.compile(r"^[A-Za-z0-9_./-]{1,63}$")


@dataclass(frozen=True)
class DynamicLabel:
    """A label whose value a command prints, refreshed every ``period``."""

    key: str
    period: timedelta
    command: list[str]


def parse(text: str) -> tuple[dict[str, str], list[DynamicLabel]]:
    """Split ``k=v,k2=[1h:"cmd arg"]``; raise ``ValueError`` naming the bad part."""
    static: dict[str, str] = {}
    dynamic: list[DynamicLabel] = []
    for part in _split(text):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise ValueError(f"label {part!r} is not KEY=VALUE (keys: letters, digits, _ . / -)")
        value = value.strip()
        match = _DYNAMIC.match(value)
        if match is None:
            if value.startswith("["):
                raise ValueError(f'label {key!r}: a command label looks like [1h:"uname -m"]')
            static[key] = value
            continue
        period = parse_duration(match.group("period"))
        if period < MIN_PERIOD:
            raise ValueError(f"label {key!r}: the period must be at least 1m")
        command = shlex.split(match.group("command").strip().strip('"'))
        if not command:
            raise ValueError(f"label {key!r}: the command is empty")
        dynamic.append(DynamicLabel(key, period, command))
    return static, dynamic


def _split(text: str) -> list[str]:
    """Commas separate labels, except inside ``[...]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


async def evaluate(label: DynamicLabel, timeout: float = 30.0) -> str:
    """The command's first line of output, or an error marker the operator will notice."""
    try:
        child = await asyncio.create_subprocess_exec(
            *label.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(child.communicate(), timeout)
    except (OSError, TimeoutError):
        return "<error>"
    if child.returncode != 0:
        return "<error>"
    lines = out.decode(errors="replace").strip().splitlines()
    return lines[0][:255] if lines else ""

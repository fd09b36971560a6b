"""Command-line parsing shared by ``jump``, ``jumpctl`` and ``jumpgate``."""

import argparse
from datetime import UTC, datetime
from typing import NoReturn

from jumpgate.cli.common.errors import CLIError
from jumpgate.protocol.durations import parse_duration


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: what was wrong, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value

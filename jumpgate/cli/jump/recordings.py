"""``jump recordings ls`` and ``jump play``: find recorded sessions and replay them.

``jump play`` fetches a recording part by part (each checked by the platform against what was
recorded) and turns the frames into asciicast v2 as they come, so it can start while the
session is still being recorded and follow it (live tail), as ``tail -f`` does.
"""

import argparse
import base64
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from jumpgate.cli.common import output, pages
from jumpgate.cli.common.args import moment, positive
from jumpgate.cli.common.errors import CLIError
from jumpgate.protocol import calls, models
from jumpgate.protocol.client import Client
from jumpgate.protocol.recording import (
    Decoder,
    asciicast_header,
    check_session_id,
    decompress,
)

LIVE_POLL_SECONDS = 1.0
IDLE_SECONDS = 1.0
"""``--skip-idle-time``: a pause longer than this plays as this long."""


def register(sub: Any) -> None:
    recordings = sub.add_parser("recordings", help="recorded sessions")
    rsub = recordings.add_subparsers(dest="recordings_command", required=True)
    ls = rsub.add_parser("ls", help="finished recordings, newest first (yours; all for admins)")
    ls.add_argument("--from", dest="since", help="start: a time or a duration ago (default 7d)")
    ls.add_argument("--to", dest="until", help="end, exclusive (default: now)")
    ls.add_argument("--limit", type=positive, default=50, help="recordings to show (50)")
    output.add_format(ls)

    play = sub.add_parser("play", help="replay a recorded session (follows a live one)")
    play.add_argument("session_id", help="the session id (see jump recordings ls)")
    play.add_argument("--speed", type=float, default=1.0, help="playback speed (2 = twice)")
    play.add_argument(
        "--skip-idle-time", action="store_true", help=f"play pauses as {IDLE_SECONDS:g}s at most"
    )
    play.add_argument(
        "--format",
        choices=("play", "asciicast", "json", "text"),
        default="play",
        help="play in the terminal (default), or print asciicast v2, JSON or the text",
    )


def ls(client: Client, args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = []
    if args.since is not None:
        params.append(("from", moment(args.since).isoformat()))
    if args.until is not None:
        params.append(("to", moment(args.until).isoformat()))
    rows, more = pages.collect(client, calls.recordings, _rows, params, args.limit)
    if more:
        print(
            f"jump: more recordings match than --limit {args.limit}: raise it or use --from",
            file=sys.stderr,
        )
    if args.format == "json":
        output.emit_json(rows)
        return 0
    output.table(
        ["Session ID", "User", "Login", "Node", "Kind", "Started", "Size"],
        [
            (
                r.session_id,
                r.user,
                r.login,
                r.nodename or r.server_id,
                r.kind + (" (closed by the platform)" if r.synthesized else ""),
                output.when(r.started) if r.started else "",
                r.size,
            )
            for r in rows
        ],
    )
    return 0


def _rows(page: models.RecordingList) -> list[models.RecordingRow]:
    return page.recordings


def _parts(client: Client, session_id: str) -> Iterator[bytes]:
    """The recording's parts in order; for a live one, waits for more until it completes."""
    index = 1
    while True:
        info = client.send(calls.recording(session_id))
        while index <= len(info.parts):
            part = client.send(calls.recording_part(session_id, index))
            yield base64.b64decode(part.data)
            index += 1
        if info.complete:
            return
        time.sleep(LIVE_POLL_SECONDS)


def _events(client: Client, session_id: str) -> Iterator[list[Any]]:
    decoder = Decoder()
    for part in _parts(client, session_id):
        yield from decoder.feed(decompress(part))


def play(client: Client, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        session_id = check_session_id(args.session_id)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if args.speed <= 0:
        raise CLIError("--speed must be more than 0, e.g. --speed 2")
    meta = client.send(calls.recording(session_id)).meta
    events = _events(client, session_id)
    if args.format == "asciicast":
        out.write(json.dumps(asciicast_header(meta)) + "\n")
        for event in events:
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
            out.flush()
    elif args.format == "json":
        output.emit_json({"session": meta, "events": list(events)})
    elif args.format == "text":
        for event in events:
            if event[1] == "o":
                out.write(event[2])
    else:
        _replay(events, out, args.speed, args.skip_idle_time)
    out.flush()
    return 0


def _replay(events: Iterator[list[Any]], out: TextIO, speed: float, skip_idle: bool) -> None:
    """Write output with the recorded timing (scaled), as ``asciinema play`` does."""
    started = time.monotonic()
    shift = 0.0  # seconds of idle time skipped so far
    last = 0.0
    for at, kind, data in events:
        gap = at - last
        if skip_idle and gap > IDLE_SECONDS:
            shift += gap - IDLE_SECONDS
        last = at
        wait = (at - shift) / speed - (time.monotonic() - started)
        if wait > 0:
            time.sleep(wait)
        if kind == "o":
            out.write(data)
            out.flush()

"""``jumpctl recordings``: check a recording, and set how the cluster records."""

import argparse
from typing import Any

from jumpgate.cli.common import output
from jumpgate.cli.common.errors import CLIError
from jumpgate.cli.jumpctl.context import Context
from jumpgate.protocol import calls
from jumpgate.protocol.recording import RecordingMode, check_session_id


def register(sub: Any) -> None:
    recordings = sub.add_parser("recordings", help="check recordings, set the recording mode")
    rsub = recordings.add_subparsers(dest="recordings_command", required=True)
    verify = rsub.add_parser("verify", help="check every part of a recording and its signature")
    verify.add_argument("session_id", help="the session id (see jump recordings ls)")
    output.add_format(verify)
    verify.set_defaults(handler=_verify)

    mode = rsub.add_parser("mode", help="show or set where sessions are recorded")
    mode.add_argument(
        "mode",
        nargs="?",
        choices=[m.value for m in RecordingMode],
        help="node (default), node-sync (a session ends if it cannot be recorded), off",
    )
    mode.add_argument(
        "--exec",
        dest="record_exec",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="record exec sessions (jump ssh NODE COMMAND) too",
    )
    output.add_format(mode)
    mode.set_defaults(handler=_mode)


def _verify(ctx: Context, args: argparse.Namespace) -> int:
    try:
        session_id = check_session_id(args.session_id)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    verdict = ctx.client.send(calls.verify_recording(session_id))
    if args.format == "json":
        output.emit_json(verdict)
        return 0 if verdict.ok else 1
    if not verdict.ok:
        raise CLIError(f"recording {session_id}: " + "; ".join(verdict.problems))
    state = "complete and signed" if verdict.complete else "still recording"
    print(f"recording {session_id}: {output.counted(verdict.parts, 'part')} as recorded, {state}")
    return 0


def _mode(ctx: Context, args: argparse.Namespace) -> int:
    settings = ctx.client.send(calls.recording_settings())
    if args.mode is not None or args.record_exec is not None:
        changed = settings.model_copy(
            update={
                "mode": settings.mode if args.mode is None else RecordingMode(args.mode),
                "record_exec": (
                    settings.record_exec if args.record_exec is None else args.record_exec
                ),
            }
        )
        settings = ctx.client.send(calls.set_recording_settings(changed))
    if args.format == "json":
        output.emit_json(settings)
    else:
        exec_text = "recorded" if settings.record_exec else "not recorded"
        print(f"recording mode: {settings.mode.value} (exec sessions {exec_text})")
    return 0

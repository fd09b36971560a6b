"""How long the agent waits before trying again what failed: exponential, capped, jittered."""

import asyncio
import random

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


def backoff(attempt: int) -> float:
    """Seconds to wait after failure number ``attempt`` (from 0): exponential from 1 s, capped
    at 30 s, with full jitter on the upper half."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` when the running task was asked to stop.

    asyncssh can turn a cancellation that lands inside one of its calls into its own error
    ("SSH connection closed"); a loop that catches that error and tries again would then
    outlive its cancel for ever (an agent that never exits on SIGTERM). Such loops call this
    after catching an error.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

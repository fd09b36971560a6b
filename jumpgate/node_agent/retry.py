"""How long the agent waits before trying again what failed: exponential, capped, jittered."""

import random

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


def backoff(attempt: int) -> float:
    """Seconds to wait after failure number ``attempt`` (from 0): exponential from 1 s, capped
    at 30 s, with full jitter on the upper half."""
    ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

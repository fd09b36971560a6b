"""How often the proxy records a refusal of one user: a burst, then one a second, the rest
counted, so that probing names cannot flood the audit outbox every tenant shares."""

import time
from collections.abc import Callable

from jumpgate.protocol.token_bucket import TokenBucket

REJECTED_BURST = 20
"""``session.rejected`` events one user may leave at once; then one a second, the rest
counted (``rejected_unrecorded``): probing names costs the proxy a lookup, and the proxy's
outbox, shared by every tenant, drops its oldest events when full."""


class Rejections:
    """Per user, whether a refusal is recorded now, and how many were not since."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._users: dict[tuple[str, str], tuple[TokenBucket, int]] = {}

    def due(self, key: tuple[str, str]) -> int | None:
        """The refusals of the user ``key`` names (tenant, user id) not recorded since the
        last one, when this one is to be recorded; None (and it is counted) when not."""
        bucket, skipped = self._users.get(key) or (
            TokenBucket(1.0, REJECTED_BURST, self._clock),
            0,
        )
        if bucket.wait_for(1):
            self._users[key] = (bucket, skipped + 1)
            return None
        bucket.take(1)
        self._users[key] = (bucket, 0)
        if len(self._users) > 10_000:  # forget those with nothing to carry and a full bucket
            self._users = {k: v for k, v in self._users.items() if v[1] or not v[0].full()}
        return skipped

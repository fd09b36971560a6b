"""A token bucket: ``rate`` tokens a second, up to ``burst``; what the proxy's audit intake
and the node's per-session audit budgets both meter with."""

from collections.abc import Callable


class TokenBucket:
    """Tokens refilled at ``rate`` a second up to ``burst``. Taking more than there are
    leaves a debt (at most ``burst``) that the refill pays back first."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.level = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.burst, self.level + (now - self._at) * self.rate)
        self._at = now

    def take(self, amount: float) -> bool:
        """Take ``amount``; False when there were not that many."""
        self._refill()
        self.level -= min(amount, self.burst)
        return self.level >= 0

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` tokens are there (0 if they are)."""
        self._refill()
        return max(0.0, (min(amount, self.burst) - self.level) / self.rate)

    def full(self) -> bool:
        """Whether the bucket has refilled to its burst (nothing owed, nothing spent)."""
        self._refill()
        return self.level >= self.burst

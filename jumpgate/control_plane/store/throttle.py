"""DynamoDB throttling, retried here where it can be seen (teleport#6140).

botocore would retry a throttled request silently, and after its last attempt the caller
sees an error that says nothing of load. The tables' clients are made with no retries of
their own; every call goes through ``Retrier``, which backs off (exponential, full jitter)
on throttling and on DynamoDB's 5xx answers, logs each one with the table and operation,
counts them for metrics (``counts``: Lambda's EMF, the daemon's ``/metrics``), and when
the attempts are spent raises ``StoreUnavailable`` (a 503 the client may retry), never
swallowing the failure.
"""

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from time import sleep
from typing import TypeVar

from pynamodb.exceptions import PynamoDBException

from jumpgate.control_plane.errors import StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ThrottlingError",  # a transaction's cancellation reason
    }
)
SERVER_ERRORS = frozenset({"InternalServerError", "ServiceUnavailable"})
ATTEMPTS = 6
BASE_SECONDS = 0.05
CAP_SECONDS = 1.6
"""Six attempts with full jitter wait at most about 3 s in all before giving up."""

counts: Counter[str] = Counter()
"""Throttled (or 5xx) answers per table since the process started."""
_counts_lock = threading.Lock()


def _codes(exc: PynamoDBException) -> set[str]:
    """The error code, and for a cancelled transaction the codes of its reasons."""
    codes = {exc.cause_response_code or ""}
    for reason in getattr(exc, "cancellation_reasons", None) or []:
        if reason is not None:
            codes.add(reason.code)
    return codes


def backoff(attempt: int) -> float:
    """Seconds to wait after ``attempt`` failed: full jitter under an exponential cap."""
    return random.uniform(0, min(CAP_SECONDS, BASE_SECONDS * 2**attempt))  # noqa: S311


class Retrier:
    """Runs one table's calls, retrying throttled ones with backoff; see the module."""

    def __init__(self, table: str) -> None:
        self.table = table

    def __call__(self, operation: str, call: Callable[[], T]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return call()
            except PynamoDBException as exc:
                codes = _codes(exc)
                if not codes & (THROTTLED | SERVER_ERRORS):
                    raise
                with _counts_lock:
                    counts[self.table] += 1
                code = sorted(codes & (THROTTLED | SERVER_ERRORS))[0]
                logger.warning(
                    "dynamodb throttled" if code in THROTTLED else "dynamodb server error",
                    extra={
                        "table": self.table,
                        "operation": operation,
                        "code": code,
                        "attempt": attempt,
                        "of": ATTEMPTS,
                    },
                )
                if attempt == ATTEMPTS:
                    raise StoreUnavailable(
                        f"the store is overloaded ({code} on {self.table}): try again shortly"
                    ) from exc
                sleep(backoff(attempt))
        raise AssertionError("unreachable")

    def each(self, operation: str, rows: Iterable[T]) -> Iterator[T]:
        """The rows of a paged call (a query), a throttled page asked again where it stopped."""
        pages = iter(rows)
        while (row := self(operation, partial(next, pages, None))) is not None:
            yield row

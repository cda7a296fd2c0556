"""The shared cache (Redis in production) failing, for the readers that can do without it.

Two things live in the cache: rate-limit counters and summed statistics.
Neither is money (payments live in the database), so when the cache fails
(Redis down, or not answering within REDIS_SOCKET_TIMEOUT) both carry on
without it: rate limits let calls through, statistics are summed from the
database. That is logged as an ERROR naming the cause, and the cache is left
alone for RETRY_SECONDS, so a hung Redis costs one timeout per process every
few seconds instead of one per cache operation.
"""

import logging
import time

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
# What the cache backends raise when their store fails: Redis's errors, the file cache's OSError.
CACHE_FAILURES = (RedisError, OSError)
# time.monotonic() until which the cache is not asked (this process).
_down_until = 0.0


def cache_available() -> bool:
    """False for RETRY_SECONDS after cache_failed()."""
    return time.monotonic() >= _down_until


def cache_failed(error: Exception, consequence: str) -> None:
    """Note a failure of the cache (one of CACHE_FAILURES) and what the caller does without it."""
    global _down_until
    _down_until = time.monotonic() + RETRY_SECONDS
    logger.error("the cache failed (%s: %s): %s; it is asked again in %g s", type(error).__name__, error,
                 consequence, RETRY_SECONDS)

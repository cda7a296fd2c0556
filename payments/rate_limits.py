"""Fixed-window counters in the shared cache (Redis in production), for per-key limits and for the
requests of each client address that present neither an API key nor a payment.

Windows are aligned to the epoch, so the daily window turns over at midnight
UTC. Every process and host sees the same counter; with the file cache of a
bare `make run` the increment is not atomic across processes, which is an
accepted imprecision for a single machine.

When the cache fails the limits fail open (server402.cache_outages): the call
goes on and an ERROR says limits are not enforced. They protect capacity, not
money (payments live in the database, and every call is still paid for), so
refusing every call while Redis is away would turn a cache outage into a full
one.
"""

import math
import time

from django.conf import settings
from django.core.cache import cache

from server402 import cache_outages

MINUTE = 60
DAY = 86_400


def _counted(key: str, window_seconds: int) -> int:
    cache.add(key, 0, timeout=window_seconds + 60)
    try:
        return cache.incr(key)
    except ValueError:
        # Evicted between add and incr: this hit opens the window again.
        cache.set(key, 1, timeout=window_seconds + 60)
        return 1


def window_hit(name: str, *, limit: int, window_seconds: int, now: float | None = None) -> int | None:
    """Count one hit; None while within `limit` (or while the cache fails), else the seconds until the
    window turns over."""
    if not cache_outages.cache_available():
        return None
    now = time.time() if now is None else now
    bucket = int(now // window_seconds)
    try:
        count = _counted(f"ratelimit:{name}:{window_seconds}:{bucket}", window_seconds)
    except cache_outages.CACHE_FAILURES as error:
        cache_outages.cache_failed(error, "rate limits are not enforced, calls go through")
        return None
    if count <= limit:
        return None
    return max(1, math.ceil((bucket + 1) * window_seconds - now))


def anonymous_hit(client_address: str) -> int | None:
    """Count one request from `client_address` with neither an API key nor a payment: None while within
    ANONYMOUS_RATE_LIMIT_PER_MINUTE (always, when it is 0), else the seconds until the minute turns over."""
    limit = settings.ANONYMOUS_RATE_LIMIT_PER_MINUTE
    if not limit:
        return None
    return window_hit(f"anonymous:{client_address}", limit=limit, window_seconds=MINUTE)


def anonymous_limit_message() -> str:
    return (f"too many requests without an api key from this address: at most "
            f"{settings.ANONYMOUS_RATE_LIMIT_PER_MINUTE} per minute; send an api key or a payment, or wait "
            f"Retry-After seconds")

"""Fixed-window counters in the shared cache (Redis in production), for per-key limits.

Windows are aligned to the epoch, so the daily window turns over at midnight
UTC. Every process and host sees the same counter; with the file cache of a
bare `make run` the increment is not atomic across processes, which is an
accepted imprecision for a single machine.
"""

import math
import time

from django.core.cache import cache

MINUTE = 60
DAY = 86_400


def window_hit(name: str, *, limit: int, window_seconds: int, now: float | None = None) -> int | None:
    """Count one hit; None while within `limit`, else the seconds until the window turns over."""
    now = time.time() if now is None else now
    bucket = int(now // window_seconds)
    key = f"ratelimit:{name}:{window_seconds}:{bucket}"
    cache.add(key, 0, timeout=window_seconds + 60)
    try:
        count = cache.incr(key)
    except ValueError:
        # Evicted between add and incr: this hit opens the window again.
        cache.set(key, 1, timeout=window_seconds + 60)
        count = 1
    if count <= limit:
        return None
    return max(1, math.ceil((bucket + 1) * window_seconds - now))

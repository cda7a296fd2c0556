"""Latency as a log-scale histogram: fixed buckets 10% wide, merged by adding counts.

Percentiles read from the merged histogram are the upper bound of the bucket
that holds them, so they are never under the true value and at most 10% over
it. That is what lets hourly rows stand in for millions of samples.
"""

import math
from collections.abc import Iterable

GROWTH = 1.1
_LOG_GROWTH = math.log(GROWTH)
NO_LATENCY = -1


def bucket(latency_ms: int | None) -> int:
    """The bucket of a latency: bucket i holds (GROWTH**(i-1), GROWTH**i] milliseconds; 0 holds up to 1 ms."""
    if latency_ms is None:
        return NO_LATENCY
    if latency_ms <= 1:
        return 0
    # The epsilon keeps an exact bound (1.1**i) in its own bucket despite floating point.
    return math.ceil(math.log(latency_ms) / _LOG_GROWTH - 1e-9)


def upper_bound_ms(index: int) -> int:
    return math.ceil(GROWTH**index - 1e-9)


def percentile(histogram: dict[int, int], fraction: float) -> int | None:
    """The latency under which `fraction` of the samples fall (an upper bound, see above); None if empty."""
    counts = sorted((index, count) for index, count in histogram.items() if index != NO_LATENCY and count > 0)
    total = sum(count for _, count in counts)
    if not total:
        return None
    rank = math.ceil(fraction * total)
    seen = 0
    for index, count in counts:
        seen += count
        if seen >= rank:
            return upper_bound_ms(index)
    return upper_bound_ms(counts[-1][0])  # pragma: no cover - rank <= total


def merged(histograms: Iterable[dict[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for histogram in histograms:
        for index, count in histogram.items():
            total[index] = total.get(index, 0) + count
    return total

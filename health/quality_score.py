"""The quality score (0-100): one formula, from stored checks and calls, with its parts shown.

    score = 100 x sum(weight x value) / sum(weight), over the parts with enough samples

| part         | weight | value (0..1)                                                          | samples needed |
|--------------|--------|-----------------------------------------------------------------------|----------------|
| availability | 40     | share of the last 10 checks that got an answer (healthy or degraded)  | 1 check        |
| latency      | 25     | share of the last 24 hours' timed samples at or under the SLA's       | 1 sample       |
|              |        | maxLatency (answered checks; successful and timed-out calls)          |                |
| freshness    | 15     | 1 while the last check is recent (2 check intervals, at least 1 hour), | 1 check        |
|              |        | then falling linearly to 0 at 24 hours (or 2 x the recent window)      |                |
| success      | 20     | successful real calls / (successful + failed) over 24 hours; calls the | 10 calls       |
|              |        | upstream refused for the caller's input count as neither              |                |

- A part with too few samples is left out (its weight too) and the note says so.
- No check at all: no score ("not checked yet"); the catalog shows null, not a guess.
- A service whose latest check is unhealthy or unconfigured scores at most 40,
  whatever its history: it does not work now.
Latency is a share under the SLA, not a mean: one 30-second call cannot hide
behind a hundred fast ones, nor sink them.
"""

from dataclasses import dataclass
from datetime import datetime

WEIGHTS = {"availability": 40, "latency": 25, "freshness": 15, "success": 20}
RECENT_CHECKS = 10
MINIMUM_SAMPLES = {"availability": 1, "latency": 1, "freshness": 1, "success": 10}
# Fewer checks than this still count, but the note says the score rests on little.
FEW_CHECKS = 3
DOWN_STATUSES = ("unhealthy", "unconfigured")
DOWN_CAP = 40
DAY_SECONDS = 86_400
MIN_FRESH_SECONDS = 3600


@dataclass(frozen=True)
class QualityInputs:
    """What the score is computed from; selectors read it from ServiceHealth and ServiceStatsHour."""

    recent_statuses: list[str]  # newest first
    last_checked_at: datetime | None
    latency_samples: int
    latency_within_sla: int
    sla_max_latency_ms: int
    call_successes: int
    call_failures: int
    now: datetime
    check_interval_seconds: int


@dataclass(frozen=True)
class QualityScore:
    score: int | None
    parts: list[dict]
    note: str


def _part(name: str, value: float | None, samples: int, detail: str) -> dict:
    used = value is not None and samples >= MINIMUM_SAMPLES[name]
    return {
        "name": name, "weight": WEIGHTS[name], "value": round(value, 3) if used else None,
        "points": round(WEIGHTS[name] * value, 1) if used else None,
        "samples": samples, "minimumSamples": MINIMUM_SAMPLES[name], "used": used, "detail": detail,
    }


def availability_part(recent_statuses: list[str]) -> dict:
    checks = [status for status in recent_statuses[:RECENT_CHECKS] if status != "unknown"]
    answered = sum(status in ("healthy", "degraded") for status in checks)
    value = answered / len(checks) if checks else None
    return _part("availability", value, len(checks),
                 f"{answered} of the last {len(checks)} checks answered" if checks else "no check yet")


def latency_part(samples: int, within_sla: int, sla_max_latency_ms: int) -> dict:
    value = within_sla / samples if samples else None
    detail = (f"{within_sla} of {samples} samples in 24 hours at or under {sla_max_latency_ms} ms" if samples
              else "no timed sample in 24 hours")
    return _part("latency", value, samples, detail)


def freshness_window(check_interval_seconds: int) -> tuple[int, int]:
    """(fresh, stale) seconds: full marks until `fresh`, none from `stale`."""
    fresh = max(MIN_FRESH_SECONDS, 2 * check_interval_seconds)
    return fresh, max(DAY_SECONDS, 2 * fresh)


def freshness_part(last_checked_at: datetime | None, now: datetime, check_interval_seconds: int) -> dict:
    if last_checked_at is None:
        return _part("freshness", None, 0, "no check yet")
    fresh, stale = freshness_window(check_interval_seconds)
    age = max(0.0, (now - last_checked_at).total_seconds())
    value = 1.0 if age <= fresh else max(0.0, (stale - age) / (stale - fresh))
    minutes = round(age / 60)
    return _part("freshness", value, 1, f"last check {minutes} minutes ago (full marks within {fresh // 60})")


def success_part(successes: int, failures: int) -> dict:
    calls = successes + failures
    value = successes / calls if calls else None
    detail = (f"{successes} of {calls} paid calls in 24 hours succeeded" if calls
              else "no paid call in 24 hours")
    if 0 < calls < MINIMUM_SAMPLES["success"]:
        detail += f" (too few: {MINIMUM_SAMPLES['success']} needed)"
    return _part("success", value, calls, detail)


def quality_score(inputs: QualityInputs) -> QualityScore:
    """The score and its parts; see the module docstring for the formula."""
    parts = [
        availability_part(inputs.recent_statuses),
        latency_part(inputs.latency_samples, inputs.latency_within_sla, inputs.sla_max_latency_ms),
        freshness_part(inputs.last_checked_at, inputs.now, inputs.check_interval_seconds),
        success_part(inputs.call_successes, inputs.call_failures),
    ]
    used = [part for part in parts if part["used"]]
    if not parts[0]["used"]:
        return QualityScore(None, parts, "not checked yet: no score until a health check has answered")
    score = round(100 * sum(part["points"] for part in used) / sum(part["weight"] for part in used))
    notes = []
    left_out = [part["name"] for part in parts if not part["used"]]
    if left_out:
        notes.append(f"too few samples for {', '.join(left_out)}, left out of the score")
    if parts[0]["samples"] < FEW_CHECKS:
        notes.append(f"based on {parts[0]['samples']} health check{'s' if parts[0]['samples'] > 1 else ''}")
    latest = next((status for status in inputs.recent_statuses if status != "unknown"), None)
    if latest in DOWN_STATUSES and score > DOWN_CAP:
        score = DOWN_CAP
        notes.append(f"capped at {DOWN_CAP}: the latest check was {latest}")
    return QualityScore(score, parts, "; ".join(notes))

"""Reads of health and quality data.

The quality block of any number of services costs two queries, whatever the
history: ServiceHealth (one row per service) and the last 24 hours of
ServiceStatsHour rows, read through the (service, hour, ...) unique index.
Raw results and call records are never scanned.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from catalog.models import Service
from health import latency
from health.models import HealthStatus, ServiceHealth, ServiceStatsHour
from health.quality_score import QualityInputs, QualityScore, quality_score

WINDOW_HOURS = 24
# Outcomes that are the caller's doing (the upstream refused their input): neither success nor failure.
CALLER_OUTCOMES = ("client_error",)
ANSWERED = (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
# Latency samples: answers, and calls that waited out the timeout. A fast failure is not fast service.
TIMED_CALL_OUTCOMES = ("succeeded", "timeout")
# Search's tie-breaker: working now first, known broken last.
HEALTH_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNKNOWN: 2,
               HealthStatus.UNCONFIGURED: 3, HealthStatus.UNHEALTHY: 4}


@dataclass
class WindowStats:
    """One service's samples over the window, summed from its hourly rows."""

    calls: dict[str, int] = field(default_factory=dict)
    call_latency: dict[int, int] = field(default_factory=dict)
    check_latency: dict[int, int] = field(default_factory=dict)
    timed: int = 0
    timed_within_sla: int = 0
    challenges: int = 0

    @property
    def executions(self) -> int:
        return sum(self.calls.values())

    @property
    def successes(self) -> int:
        return self.calls.get("succeeded", 0)

    @property
    def errors(self) -> int:
        return self.executions - self.successes - sum(self.calls.get(o, 0) for o in CALLER_OUTCOMES)


def window_start(now: datetime) -> datetime:
    """The current hour and the 23 before it."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WINDOW_HOURS - 1)


def window_stats(service_ids: list[str], now: datetime) -> dict[str, WindowStats]:
    rows = (ServiceStatsHour.objects.filter(service_id__in=service_ids, hour__gte=window_start(now))
            .values_list("service_id", "source", "outcome", "bucket", "within_sla").annotate(n=Sum("count")))
    stats = {service_id: WindowStats() for service_id in service_ids}
    for service_id, source, outcome, bucket, within_sla, count in rows:
        entry = stats[service_id]
        if source == ServiceStatsHour.Source.CHALLENGE:
            entry.challenges += count
            continue
        if source == ServiceStatsHour.Source.CALL:
            entry.calls[outcome] = entry.calls.get(outcome, 0) + count
            if outcome == "succeeded":
                entry.call_latency[bucket] = entry.call_latency.get(bucket, 0) + count
            timed = outcome in TIMED_CALL_OUTCOMES
        else:
            if outcome in ANSWERED:
                entry.check_latency[bucket] = entry.check_latency.get(bucket, 0) + count
            timed = outcome in ANSWERED
        if timed and bucket != latency.NO_LATENCY:
            entry.timed += count
            entry.timed_within_sla += count if within_sla else 0
    return stats


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def service_quality(service: Service, health: ServiceHealth | None, stats: WindowStats, now: datetime) -> QualityScore:
    return quality_score(QualityInputs(
        recent_statuses=[status for status, _ in health.recent] if health else [],
        last_checked_at=health.checked_at if health else None,
        latency_samples=stats.timed, latency_within_sla=stats.timed_within_sla,
        sla_max_latency_ms=service.sla_max_latency_ms,
        call_successes=stats.successes, call_failures=stats.errors,
        now=now, check_interval_seconds=settings.HEALTH_CHECK_INTERVAL_SECONDS,
    ))


def quality_blocks(services: list[Service], *, now: datetime | None = None) -> dict[str, dict]:
    """Seed 001's `quality` block per service, plus p50/p95 latency and the score's parts.

    Counts cover the current hour and the 23 before it. callCount is every
    answered request for the tool: executions (paid calls that reached the
    upstream) plus paymentRequireds (402s). errorCount leaves out the upstream
    refusing the caller's input; successRate = successCount / (successCount +
    errorCount). Latencies are of successful calls, or of answered health
    checks when there were no calls; latencyMs is their median, or the latest
    check's latency.
    """
    now = now or timezone.now()
    ids = [service.id for service in services]
    healths = {health.service_id: health for health in ServiceHealth.objects.filter(service_id__in=ids)}
    stats = window_stats(ids, now)
    blocks = {}
    for service in services:
        health, entry = healths.get(service.id), stats[service.id]
        score = service_quality(service, health, entry, now)
        histogram = entry.call_latency or entry.check_latency
        p50, p95 = latency.percentile(histogram, 0.5), latency.percentile(histogram, 0.95)
        rated = entry.successes + entry.errors
        blocks[service.id] = {
            "qualityScore": score.score,
            "healthStatus": health.status if health else HealthStatus.UNKNOWN.value,
            "healthCheckedAt": _timestamp(health.checked_at) if health else None,
            "healthLatencyMs": health.latency_ms if health else None,
            "latencyMs": p50 if p50 is not None else (health.latency_ms if health else None),
            "successRate": round(entry.successes / rated, 4) if rated else None,
            "callCount": entry.executions + entry.challenges,
            "executionCount": entry.executions,
            "successCount": entry.successes,
            "errorCount": entry.errors,
            "paymentRequireds": entry.challenges,
            "p50LatencyMs": p50,
            "p95LatencyMs": p95,
            "windowHours": WINDOW_HOURS,
            "qualityParts": score.parts,
            "qualityNote": score.note,
        }
    return blocks


def health_statuses(service_ids) -> dict[str, str]:
    """Each service's latest health status (unknown when never checked)."""
    found = dict(ServiceHealth.objects.filter(service_id__in=list(service_ids)).values_list("service_id", "status"))
    return {service_id: found.get(service_id, HealthStatus.UNKNOWN.value) for service_id in service_ids}


"""Reads of health and quality data.

The quality block of any number of services costs two queries, whatever the
history: ServiceHealth (one row per service) and the last 24 hours of
ServiceStatsHour rows, read through the (service, hour, ...) unique index.
Raw results and call records are never scanned.

Busy services have many hourly rows (one per outcome and latency bucket), so a
window's rows grow with traffic. Only the current hour's rows still change:
the closed hours of a window are summed once per hour and shared by every
process through the cache (HEALTH_STATS_CACHE_SECONDS; 0 turns it off), and
each read adds the current hour live. `hourly_statistics_warm` (Celery beat,
at every hour's start) pays that once so no page does.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone

from catalog.models import Service
from health import latency
from health.models import HealthCheckResult, HealthRun, HealthStatus, ServiceHealth, ServiceStatsHour
from health.quality_score import QualityInputs, QualityScore, quality_score
from server402 import cache_outages

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


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def window_start(now: datetime) -> datetime:
    """The current hour and the 23 before it."""
    return hour_of(now) - timedelta(hours=WINDOW_HOURS - 1)


# Tests give each test its own namespace, so cached sums never cross from one test's rows to another's.
CACHE_NAMESPACE = "health:closed-hours"


def _closed_hours(name: str, now: datetime, compute):
    """`compute(current_hour)` over the closed hours before the current one, cached until the hour turns.

    Closed hours no longer change (samples are counted in the hour they happen),
    so one computation serves every request and process of the hour.
    """
    current = hour_of(now)
    seconds = settings.HEALTH_STATS_CACHE_SECONDS
    if not seconds or not cache_outages.cache_available():
        return compute(current)
    key = f"{CACHE_NAMESPACE}:{name}:{current:%Y%m%d%H}"
    # The sums are in the database: a page is slower without the cache, never broken by its outage.
    outage = "statistics are summed from the database"
    try:
        found = cache.get(key)
    except cache_outages.CACHE_FAILURES as error:
        cache_outages.cache_failed(error, outage)
        return compute(current)
    if found is None:
        found = compute(current)
        try:
            cache.set(key, found, seconds)
        except cache_outages.CACHE_FAILURES as error:
            cache_outages.cache_failed(error, outage)
    return found


def _hourly_rows(since: datetime, until: datetime | None, *, group_by: tuple[str, ...], where: Q | None = None,
                 service_ids: list[str] | None = None, **sums) -> list[tuple]:
    """Hourly rows from `since` (until `until`, excluded), grouped, with their counts summed (or `sums`)."""
    rows = ServiceStatsHour.objects.filter(where or Q(), hour__gte=since)
    if until is not None:
        rows = rows.filter(hour__lt=until)
    if service_ids is not None:
        rows = rows.filter(service_id__in=service_ids)
    return list(rows.values_list(*group_by).annotate(**(sums or {"n": Sum("count")})))


_WINDOW_FIELDS = ("service_id", "source", "outcome", "bucket", "within_sla")


def window_stats(service_ids: list[str], now: datetime) -> dict[str, WindowStats]:
    start = window_start(now)
    # Every service's closed hours are cached together; the current hour is read for these services only.
    closed = _closed_hours("window", now, lambda current: _hourly_rows(start, current, group_by=_WINDOW_FIELDS))
    wanted = set(service_ids)
    rows = [row for row in closed if row[0] in wanted] + _hourly_rows(
        hour_of(now), None, group_by=_WINDOW_FIELDS, service_ids=service_ids)
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



# --- Dashboard reads ----------------------------------------------------------
# Like the quality blocks, these read the hourly rows and one row per service,
# never the raw results or call records, so their cost does not grow with history.

FAILING = (HealthStatus.UNHEALTHY, HealthStatus.UNCONFIGURED, HealthStatus.DEGRADED)


@dataclass(frozen=True)
class Traffic:
    """Paid calls, their outcome and what they charged, over one period."""

    calls: int = 0
    successes: int = 0
    errors: int = 0
    challenges: int = 0
    revenue_cents: int = 0


def traffic_totals(*, now: datetime | None = None) -> dict[str, Traffic]:
    """Calls, successes, errors, 402 challenges and revenue over the last 24 hours and 7 days.

    Revenue is what paid calls charged (a 10-call token's price spread over its
    calls), so it counts money earned by results, not money merely received.
    """
    now = now or timezone.now()
    # Whole hours, as the rows are kept: the current one and the 23 (or 167) before it.
    day = window_start(now)
    week = hour_of(now) - timedelta(hours=7 * 24 - 1)
    in_day = Q(hour__gte=day)

    def rows(since: datetime, until: datetime | None) -> list[tuple]:
        return _hourly_rows(
            since, until, group_by=("source", "outcome"),
            where=Q(source__in=[ServiceStatsHour.Source.CALL, ServiceStatsHour.Source.CHALLENGE]),
            week_n=Sum("count"), week_cents=Sum("amount_cents"),
            day_n=Sum("count", filter=in_day), day_cents=Sum("amount_cents", filter=in_day))

    closed = _closed_hours("traffic", now, lambda current: rows(week, current))
    totals = {period: dict.fromkeys(Traffic.__dataclass_fields__, 0) for period in ("24h", "7d")}
    for source, outcome, week_n, week_cents, day_n, day_cents in closed + rows(hour_of(now), None):
        for period, count, cents in (("7d", week_n, week_cents), ("24h", day_n or 0, day_cents or 0)):
            entry = totals[period]
            if source == ServiceStatsHour.Source.CHALLENGE:
                entry["challenges"] += count
                continue
            entry["calls"] += count
            entry["revenue_cents"] += cents
            if outcome == "succeeded":
                entry["successes"] += count
            elif outcome not in CALLER_OUTCOMES:
                entry["errors"] += count
    return {period: Traffic(**values) for period, values in totals.items()}


# Latency samples: successful calls and answered checks, with a latency.
_TIMED = (Q(source=ServiceStatsHour.Source.CALL, outcome="succeeded")
          | Q(source=ServiceStatsHour.Source.CHECK, outcome__in=ANSWERED))


def _timed_rows(fields: tuple[str, ...], since: datetime, until: datetime | None,
                service_ids: list[str] | None = None) -> list[tuple]:
    return _hourly_rows(since, until, group_by=fields, where=_TIMED & ~Q(bucket=latency.NO_LATENCY),
                        service_ids=service_ids)


def latency_percentiles(*, now: datetime | None = None) -> dict[str, dict[str, int | None]]:
    """p50 and p95 over 24 hours of every service: successful calls, and answered health checks."""
    now = now or timezone.now()
    fields = ("source", "bucket")
    closed = _closed_hours("latency", now, lambda current: _timed_rows(fields, window_start(now), current))
    histograms: dict[str, dict[int, int]] = {ServiceStatsHour.Source.CALL: {}, ServiceStatsHour.Source.CHECK: {}}
    for source, index, count in closed + _timed_rows(fields, hour_of(now), None):
        histograms[source][index] = histograms[source].get(index, 0) + count
    return {source: {"p50": latency.percentile(histogram, 0.5), "p95": latency.percentile(histogram, 0.95)}
            for source, histogram in histograms.items()}


def _hourly_medians(rows, start: datetime) -> dict[tuple[str, int], int | None]:
    """(service, hour slot) -> median latency: successful calls when the hour had any, else answered checks."""
    hours: dict[tuple[str, int], dict[str, dict[int, int]]] = {}
    for service_id, hour, source, index, count in rows:
        slot = int((hour - start).total_seconds() // 3600)
        if 0 <= slot < WINDOW_HOURS:
            hours.setdefault((service_id, slot), {}).setdefault(source, {})[index] = count
    return {key: latency.percentile(by_source.get(ServiceStatsHour.Source.CALL)
                                    or by_source.get(ServiceStatsHour.Source.CHECK), 0.5)
            for key, by_source in hours.items()}


def latency_by_hour(service_ids: list[str], *, now: datetime | None = None) -> dict[str, list[int | None]]:
    """Each service's median latency per hour over the window, oldest first (None: no sample that hour)."""
    now = now or timezone.now()
    start = window_start(now)
    fields = ("service_id", "hour", "source", "bucket")
    closed = _closed_hours("latency-by-hour", now,
                           lambda current: _hourly_medians(_timed_rows(fields, start, current), start))
    current = _hourly_medians(_timed_rows(fields, hour_of(now), None, service_ids), start)
    series = {service_id: [None] * WINDOW_HOURS for service_id in service_ids}
    for medians in (closed, current):
        for (service_id, slot), value in medians.items():
            if service_id in series:
                series[service_id][slot] = value
    return series


def hourly_statistics_warm(*, now: datetime | None = None) -> None:
    """Sum the closed hours of every window now, so the hour's first page does not pay for it."""
    now = now or timezone.now()
    ids = list(Service.objects.values_list("id", flat=True))
    traffic_totals(now=now)
    latency_percentiles(now=now)
    window_stats(ids, now)
    latency_by_hour(ids, now=now)


def health_status_counts(*, services) -> dict[str, int]:
    """How many of these services are in each health status (never checked: unknown), every status listed."""
    counts = dict.fromkeys(HealthStatus.values, 0)
    for status in services.values_list("health__status", flat=True):
        counts[status or HealthStatus.UNKNOWN] += 1
    return counts


def failing_services(*, services, limit: int = 10) -> list[ServiceHealth]:
    """The services whose latest check failed, worst first (unhealthy, unconfigured, then degraded)."""
    rank = {status: index for index, status in enumerate(FAILING)}
    rows = list(ServiceHealth.objects.filter(service__in=services, status__in=FAILING).select_related("service"))
    rows.sort(key=lambda row: (rank[row.status], row.service_id))
    return rows[:limit]


def service_health_history(service: Service, *, limit: int = 60) -> list[HealthCheckResult]:
    """The service's latest check results, oldest first (for its chart), through the (service, -checked_at) index."""
    return list(reversed(HealthCheckResult.objects.filter(service=service).order_by("-checked_at")[:limit]))


def health_run_latest() -> HealthRun | None:
    return HealthRun.objects.select_related("started_by").order_by("-created_at", "-pk").first()


def health_runs_recent(*, limit: int = 50) -> list[HealthRun]:
    return list(HealthRun.objects.select_related("started_by").order_by("-created_at", "-pk")[:limit])


def health_run_results(run: HealthRun) -> tuple[dict[str, int], list[HealthCheckResult]]:
    """A run's results, failures first, and how many of each status."""
    results = list(HealthCheckResult.objects.filter(run=run).select_related("service"))
    rank = {status: index for index, status in enumerate((*FAILING, HealthStatus.UNKNOWN, HealthStatus.HEALTHY))}
    results.sort(key=lambda result: (rank.get(result.status, 99), result.service_id))
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts, results


def service_health_panel(service: Service) -> dict:
    """What the service page's health panel shows: its quality block and its check history."""
    return {"quality": quality_blocks([service])[service.id], "history": service_health_history(service)}

"""Writes of health and quality data: runs, their results, hourly statistics, retention."""

import logging
import math
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from catalog.models import Service
from catalog.selectors import closest_service_ids
from health import latency, probes
from health.models import HealthCheckResult, HealthRun, HealthStatus, ServiceHealth, ServiceStatsHour

logger = logging.getLogger(__name__)

# How often a running run proves it is alive, and how long past its timeouts a check may take.
HEARTBEAT_SECONDS = 5.0
# After a check finishes, how long the run waits for others to store them together.
BATCH_SECONDS = 0.05
CHECK_MARGIN_SECONDS = 5.0


class HealthRunRefused(ValueError):
    """A run that cannot be started as asked; the message says why."""


# --- Hourly statistics --------------------------------------------------------


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _stats_upsert_sql() -> str:
    table = ServiceStatsHour._meta.db_table
    # The same statement in PostgreSQL and SQLite (3.24+).
    return (f"INSERT INTO {table} (service_id, hour, source, outcome, bucket, within_sla, count, amount_cents) "
            f"VALUES (%s, %s, %s, %s, %s, %s, 1, %s) "
            f"ON CONFLICT (service_id, hour, source, outcome, bucket, within_sla) "
            f"DO UPDATE SET count = {table}.count + 1, amount_cents = {table}.amount_cents + excluded.amount_cents")


def _stats_row(service: Service, source: str, outcome: str, latency_ms: int | None, at: datetime,
               amount_cents: int = 0) -> list:
    within_sla = latency_ms is not None and latency_ms <= service.sla_max_latency_ms
    return [service.pk, connection.ops.adapt_datetimefield_value(_hour(at)), source, outcome,
            latency.bucket(latency_ms), within_sla, amount_cents]


def service_stats_record(*, service: Service, source: str, outcome: str, latency_ms: int | None,
                         at: datetime | None = None, amount_cents: int = 0) -> None:
    """Count one sample (a check, a finished call, a 402) in its service's hour.

    One upsert: concurrent writers add to the same row instead of racing a
    read-modify-write. Samples are statistics, not money: callers record them
    outside their transactions, after the fact.
    """
    with connection.cursor() as cursor:
        cursor.execute(_stats_upsert_sql(),
                       _stats_row(service, source, outcome, latency_ms, at or timezone.now(), amount_cents))


def _best_effort(record, **sample) -> None:
    # Statistics must never cost a caller a result they paid for: a failed count is logged, not raised.
    try:
        with transaction.atomic():
            record(**sample)
    except DatabaseError:
        logger.exception("could not count a %s sample of %s", sample.get("source"), sample["service"].pk)


def tool_call_stats_record(*, call) -> None:
    """A finished paid call, as the quality block counts it (best effort, see _best_effort)."""
    _best_effort(service_stats_record, service=call.service, source=ServiceStatsHour.Source.CALL,
                 outcome=call.outcome, latency_ms=call.latency_ms, amount_cents=call.amount_cents)


def challenge_stats_record(*, service: Service) -> None:
    """A 402 answered for the service (no row of its own: anonymous callers must not write rows)."""
    _best_effort(service_stats_record, service=service, source=ServiceStatsHour.Source.CHALLENGE,
                 outcome="payment_required", latency_ms=None)


# --- Results ------------------------------------------------------------------


def health_result_record(*, service: Service, outcome: probes.CheckOutcome, run: HealthRun | None = None,
                         at: datetime | None = None) -> HealthCheckResult | None:
    """Store one check's result and make it the service's latest health (unless a newer one is there)."""
    results = health_results_record(checked=[(service, outcome)], run=run, at=at)
    return results[0] if results else None


_HEALTH_FIELDS = ["status", "kind", "checked_at", "latency_ms", "http_status", "upstream_code", "message", "recent"]


def _service_healths_locked(service_ids: list[str]) -> dict[str, ServiceHealth]:
    """The services' ServiceHealth rows, created if missing, then all locked in id order.

    Created first and locked in one ordered statement: two runs over the same
    services take their locks in the same order and cannot deadlock.
    """
    ServiceHealth.objects.bulk_create([ServiceHealth(service_id=pk) for pk in service_ids], ignore_conflicts=True)
    locked = ServiceHealth.objects.select_for_update().filter(service_id__in=service_ids).order_by("service_id")
    return {health.service_id: health for health in locked}


def _service_healths_save(healths: list[ServiceHealth]) -> None:
    # One prepared UPDATE run for every row: bulk_update's CASE expressions cost more CPU than the checks.
    fields = [ServiceHealth._meta.get_field(name) for name in _HEALTH_FIELDS]
    table = ServiceHealth._meta.db_table
    assignments = ", ".join(f"{connection.ops.quote_name(field.column)} = %s" for field in fields)
    rows = [[field.get_db_prep_save(getattr(health, field.attname), connection) for field in fields]
            + [health.service_id] for health in healths]
    with connection.cursor() as cursor:
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE service_id = %s", rows)


def health_results_record(*, checked: list[tuple[Service, probes.CheckOutcome]], run: HealthRun | None = None,
                          at: datetime | None = None) -> list[HealthCheckResult]:
    """Store checks that finished together in one transaction: results, latest health, progress, statistics.

    One commit per batch, not per result: a run over 1,000 services at
    concurrency 50 is otherwise bound by the commits of its one writing thread.
    """
    at = at or timezone.now()
    with transaction.atomic():
        # A service deleted while its check ran has nowhere to keep a result; the others still count.
        existing = set(Service.objects.filter(pk__in={service.pk for service, _ in checked})
                       .values_list("pk", flat=True))
        kept = [(service, outcome) for service, outcome in checked if service.pk in existing]
        results = [
            HealthCheckResult(
                run=run, service=service, kind=outcome.kind, status=outcome.status, latency_ms=outcome.latency_ms,
                http_status=outcome.http_status, upstream_code=outcome.upstream_code[:100],
                message=outcome.message[:500], upstream_request_id=outcome.upstream_request_id[:100],
                checked_at=at)
            for service, outcome in kept
        ]
        service_ids = sorted(existing)
        HealthCheckResult.objects.bulk_create(results)
        healths = _service_healths_locked(service_ids)
        changed = {}
        for result in results:
            health = healths[result.service_id]
            if result.status == HealthStatus.UNKNOWN:
                # Not a check (no free probe, the run ran out of time, the check broke): history only,
                # so it neither hides the last real status nor makes it look fresh.
                health.recent = [[result.status, None], *health.recent][:ServiceHealth.RECENT]
                changed[health.service_id] = health
            elif health.checked_at is None or health.checked_at <= at:
                health.status, health.kind, health.checked_at = result.status, result.kind, at
                health.latency_ms, health.http_status = result.latency_ms, result.http_status
                health.upstream_code, health.message = result.upstream_code, result.message
                health.recent = [[result.status, result.latency_ms], *health.recent][:ServiceHealth.RECENT]
                changed[health.service_id] = health
        if changed:
            _service_healths_save(list(changed.values()))
        if run is not None:
            HealthRun.objects.filter(pk=run.pk).update(done=F("done") + len(checked), heartbeat_at=timezone.now())
        samples = [_stats_row(service, ServiceStatsHour.Source.CHECK, outcome.status, outcome.latency_ms, at)
                   for service, outcome in kept if outcome.status != HealthStatus.UNKNOWN]
        if samples:
            with connection.cursor() as cursor:
                cursor.executemany(_stats_upsert_sql(), samples)
    return results


# --- Runs ---------------------------------------------------------------------


def _chosen_services(service_ids: list[str] | None) -> list[str]:
    if not service_ids:
        chosen = list(Service.objects.filter(state=Service.State.PUBLISHED).order_by("id").values_list("id", flat=True))
        if not chosen:
            raise HealthRunRefused("there is no published service to check")
        return chosen
    wanted = list(dict.fromkeys(service_ids))
    known = set(Service.objects.filter(id__in=wanted).values_list("id", flat=True))
    unknown = [service_id for service_id in wanted if service_id not in known]
    if unknown:
        hints = {service_id: closest_service_ids(service_id) for service_id in unknown}
        described = "; ".join(f"{service_id!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                              for service_id, hint in hints.items())
        raise HealthRunRefused(f"unknown service id: {described}")
    return wanted


def health_run_start(*, trigger: str, service_ids: list[str] | None = None, concurrency: int | None = None,
                     full: bool = False, started_by=None, enqueue: bool = True, delay_seconds: float = 0) -> HealthRun:
    """Create a run over the chosen services (every published one by default) and queue it on Celery.

    Refuses (HealthRunRefused, nothing created) an unknown service id or a
    concurrency outside 1..HEALTH_CHECK_MAX_CONCURRENCY. The run is queued once
    the surrounding transaction commits, so the worker always finds its row;
    `delay_seconds` holds it back (make run queues one before the web server is up).
    """
    concurrency = settings.HEALTH_CHECK_CONCURRENCY if concurrency is None else concurrency
    if not 1 <= concurrency <= settings.HEALTH_CHECK_MAX_CONCURRENCY:
        raise HealthRunRefused(
            f"concurrency must be between 1 and {settings.HEALTH_CHECK_MAX_CONCURRENCY}, not {concurrency}")
    chosen = _chosen_services(service_ids)
    run = HealthRun.objects.create(trigger=trigger, started_by=started_by, service_ids=chosen, full=full,
                                   concurrency=concurrency, total=len(chosen))
    if enqueue:
        transaction.on_commit(lambda: _enqueue(run, delay_seconds))
    return run


def _enqueue(run: HealthRun, delay_seconds: float) -> None:
    from health.tasks import execute_health_run

    try:
        execute_health_run.apply_async((run.pk,), countdown=delay_seconds or None)
    except Exception as error:
        # A queued row with no message would wait for ever and hold back the schedule.
        HealthRun.objects.filter(pk=run.pk, status=HealthRun.Status.QUEUED).update(
            status=HealthRun.Status.FAILED, finished_at=timezone.now(),
            error=f"could not be queued: {error.__class__.__name__}: {error}"[:500])
        raise


def health_run_schedule() -> HealthRun | None:
    """The scheduled run, unless the previous scheduled one is still queued or running."""
    busy = HealthRun.objects.filter(trigger=HealthRun.Trigger.SCHEDULE,
                                    status__in=[HealthRun.Status.QUEUED, HealthRun.Status.RUNNING])
    if busy.exists():
        return None
    try:
        return health_run_start(trigger=HealthRun.Trigger.SCHEDULE)
    except HealthRunRefused:
        return None


def _check_seconds() -> float:
    """The longest one check may take: one attempt's timeouts and a margin."""
    return settings.ALIBABA_CLOUD_CONNECT_TIMEOUT + settings.ALIBABA_CLOUD_READ_TIMEOUT + CHECK_MARGIN_SECONDS


def _run_failed(run_id: int, error: str) -> None:
    HealthRun.objects.filter(pk=run_id, status=HealthRun.Status.RUNNING).update(
        status=HealthRun.Status.FAILED, error=error[:500], finished_at=timezone.now())


def health_run_execute(*, run_id: int) -> HealthRun | None:
    """Check a queued run's services, `concurrency` at a time, storing each result as it comes.

    Only a queued run is taken (a task delivered twice does the work once).
    Each check is bounded by the upstream client's timeouts (one attempt) and
    the run by ceil(N / concurrency) such bounds: a check still going then is
    recorded unhealthy ("no answer") and the run ends. The worker writes a
    heartbeat while it waits, so a run whose worker died is found by
    health_runs_reap. An error of the run itself marks it failed.
    """
    now = timezone.now()
    if not HealthRun.objects.filter(pk=run_id, status=HealthRun.Status.QUEUED).update(
            status=HealthRun.Status.RUNNING, started_at=now, heartbeat_at=now):
        return None
    run = HealthRun.objects.get(pk=run_id)
    pool = None
    try:
        services = {s.id: s for s in Service.objects.filter(id__in=run.service_ids)}
        order = [service_id for service_id in run.service_ids if service_id in services]
        if len(order) != run.total:
            HealthRun.objects.filter(pk=run.pk).update(total=len(order))
        if order:
            pool = ThreadPoolExecutor(max_workers=min(run.concurrency, len(order)),
                                      thread_name_prefix=f"health-run-{run.pk}")
            _checks_collect(run, pool, [services[service_id] for service_id in order])
        HealthRun.objects.filter(pk=run.pk, status=HealthRun.Status.RUNNING).update(
            status=HealthRun.Status.SUCCEEDED, finished_at=timezone.now(), heartbeat_at=timezone.now())
    except Exception as error:
        logger.exception("health run %s failed", run_id)
        _run_failed(run_id, f"the run stopped: {error.__class__.__name__}: {error}")
    finally:
        if pool is not None:
            # A check past its bound keeps its thread until the client's timeout; the run does not wait for it.
            pool.shutdown(wait=False, cancel_futures=True)
    run.refresh_from_db()
    return run


def _checks_collect(run: HealthRun, pool: ThreadPoolExecutor, services: list[Service]) -> None:
    def checked(service: Service, future_started: list) -> probes.CheckOutcome:
        future_started.append(time.monotonic())
        return probes.check(service, full=run.full or service.health_full_check)

    futures: dict[Future, tuple[Service, list]] = {}
    for service in services:
        marker: list = []
        futures[pool.submit(checked, service, marker)] = (service, marker)
    bound = _check_seconds()
    run_deadline = time.monotonic() + math.ceil(len(services) / run.concurrency) * bound + CHECK_MARGIN_SECONDS
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=HEARTBEAT_SECONDS, return_when=FIRST_COMPLETED)
        if done and pending:
            # Gather what finishes in the next moment too: one transaction per batch, fewer commits.
            more, pending = wait(pending, timeout=BATCH_SECONDS)
            done |= more
        if done:
            # Writes the heartbeat too.
            health_results_record(checked=[(futures[future][0], future.result()) for future in done], run=run)
        else:
            HealthRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        now = time.monotonic()
        overdue = []
        for future in list(pending):
            service, marker = futures[future]
            if (marker and now - marker[0] > bound) or now > run_deadline:
                pending.discard(future)
                future.cancel()
                full = run.full or service.health_full_check
                kind = HealthCheckResult.Kind.FULL if full else HealthCheckResult.Kind.PROBE
                message = (f"no answer within {bound:g} s" if marker
                           else "the run ran out of time before this service's check started")
                status = HealthStatus.UNHEALTHY if marker else HealthStatus.UNKNOWN
                overdue.append((service, probes.CheckOutcome(kind, status, message)))
        if overdue:
            health_results_record(checked=overdue, run=run)


def health_runs_reap(*, stale_after: timedelta) -> int:
    """Mark failed the running runs whose worker stopped writing heartbeats, and queued runs nobody took."""
    now = timezone.now()
    reaped = HealthRun.objects.filter(status=HealthRun.Status.RUNNING, heartbeat_at__lt=now - stale_after).update(
        status=HealthRun.Status.FAILED, finished_at=now,
        error=f"the worker running it stopped (no heartbeat for {stale_after.total_seconds():.0f} s)")
    # A queue can be long, but a run not started in a day will not be.
    reaped += HealthRun.objects.filter(status=HealthRun.Status.QUEUED, created_at__lt=now - timedelta(days=1)).update(
        status=HealthRun.Status.FAILED, finished_at=now, error="no worker started it within a day")
    return reaped


PURGE_BATCH = 10_000


def _delete_in_batches(queryset) -> int:
    """Short transactions: a purge after a long pause must not lock a million rows at once."""
    deleted = 0
    while ids := list(queryset.values_list("pk", flat=True)[:PURGE_BATCH]):
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted


def health_history_purge(*, older_than: timedelta) -> dict[str, int]:
    """Delete results, finished runs and hourly statistics older than the retention window."""
    cutoff = timezone.now() - older_than
    return {
        "results": _delete_in_batches(HealthCheckResult.objects.filter(checked_at__lt=cutoff)),
        "runs": _delete_in_batches(HealthRun.objects.filter(
            created_at__lt=cutoff, status__in=[HealthRun.Status.SUCCEEDED, HealthRun.Status.FAILED])),
        "hours": _delete_in_batches(ServiceStatsHour.objects.filter(hour__lt=_hour(cutoff))),
    }


def service_check_now(*, service: Service, started_by=None) -> HealthCheckResult | None:
    """Check one service at once, in the caller's thread, as a one-service dashboard run.

    Bounded by one attempt's timeouts (the run's own bound); the result is stored
    like any run's, so the service's health, score and history move with it.
    """
    run = health_run_start(trigger=HealthRun.Trigger.DASHBOARD, service_ids=[service.id], concurrency=1,
                           started_by=started_by, enqueue=False)
    health_run_execute(run_id=run.pk)
    return HealthCheckResult.objects.filter(run=run).first()

"""Celery tasks of health runs: each takes ids (or nothing) and calls one service."""

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from health import selectors, services


@shared_task
def execute_health_run(run_id: int) -> None:
    """Run one queued health run. Not retried: a run cut off is marked failed by the reaper, and a
    redelivered message finds the run no longer queued."""
    services.health_run_execute(run_id=run_id)


@shared_task
def start_scheduled_health_run() -> int | None:
    """Celery beat, every HEALTH_CHECK_INTERVAL_SECONDS: one run over every published service."""
    run = services.health_run_schedule()
    return run.pk if run else None


@shared_task
def reap_stalled_health_runs() -> int:
    """Every minute: mark failed the runs whose worker died."""
    return services.health_runs_reap(stale_after=timedelta(seconds=settings.HEALTH_RUN_STALE_SECONDS))


@shared_task
def purge_health_history() -> dict[str, int]:
    """Every hour: drop results and statistics older than HEALTH_RESULT_RETENTION_DAYS."""
    return services.health_history_purge(older_than=timedelta(days=settings.HEALTH_RESULT_RETENTION_DAYS))


@shared_task
def warm_hourly_statistics() -> None:
    """At each hour's start: sum the statistics windows' closed hours once, for every page of the hour."""
    selectors.hourly_statistics_warm()

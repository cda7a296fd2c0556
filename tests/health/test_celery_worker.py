"""Health runs through a real Celery worker: a subprocess on Redis, sharing the test's PostgreSQL database.

The other health tests call health_run_execute in the test process; these
prove the deployed path: the run queued on commit, a worker process taking
it from the broker, its results seen by other connections, and a worker
killed mid-run found by the reaper.
"""

import time
from datetime import timedelta

import pytest
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from health.models import HealthRun, ServiceHealth, ServiceStatsHour
from health.services import health_run_execute, health_run_start, health_runs_reap
from tests.celery_workers import Worker, wait_for, why_not_runnable

SERVICE_IDS = ["celebrity-recognition", "scene-recognition", "food-recognition", "face-detection"]

_not_runnable = why_not_runnable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_not_runnable), reason=_not_runnable)]


@pytest.fixture
def celery_worker(celery_workers) -> Worker:
    """A real worker on the test broker sharing the test database; the test process's Celery publishes there too."""
    return celery_workers.start()


def _wait_for_run(run: HealthRun, worker: Worker, done, what: str, timeout: float) -> HealthRun:
    def read() -> HealthRun:
        run.refresh_from_db()
        return run

    return wait_for(read, done, what=what, timeout=timeout, worker=worker, interval=0.2)


def test_a_real_worker_completes_a_health_run(celery_worker):
    run = health_run_start(trigger=HealthRun.Trigger.COMMAND, service_ids=SERVICE_IDS, concurrency=2)

    run = _wait_for_run(run, celery_worker, lambda r: r.is_finished, "finished run", timeout=60)

    assert run.status == HealthRun.Status.SUCCEEDED, run.error
    assert run.done == run.total == len(SERVICE_IDS)
    assert run.started_at and run.finished_at and run.error == ""
    found = {result.service_id: (result.kind, result.status, result.upstream_code) for result in run.results.all()}
    assert found == {service_id: ("probe", "healthy", "MissingImageURL") for service_id in SERVICE_IDS}
    for health in ServiceHealth.objects.filter(service_id__in=SERVICE_IDS):
        assert health.status == "healthy" and health.checked_at >= run.started_at
        assert health.recent[0][0] == "healthy" and "MissingImageURL" in health.message
    assert ServiceHealth.objects.filter(service_id__in=SERVICE_IDS).count() == len(SERVICE_IDS)
    checks = ServiceStatsHour.objects.filter(source="check", outcome="healthy", service_id__in=SERVICE_IDS)
    assert checks.aggregate(samples=Sum("count"))["samples"] == len(SERVICE_IDS)


def test_a_run_whose_worker_dies_is_marked_failed(celery_worker):
    # The emulator runs in this process, so this reaches it: its answers now take longer than the test, and
    # the run is mid-check when its worker is killed.
    with override_settings(SANDBOX_LATENCY_MS=30_000):
        run = health_run_start(trigger=HealthRun.Trigger.COMMAND, service_ids=SERVICE_IDS, concurrency=2)
        _wait_for_run(run, celery_worker, lambda r: r.status == HealthRun.Status.RUNNING, "running run", timeout=30)
        celery_worker.kill()

    run.refresh_from_db()
    assert run.status == HealthRun.Status.RUNNING and run.done == 0
    # Nothing writes heartbeats any more: wait until the last one is just older than stale_after.
    stale_after = timedelta(seconds=1)
    time.sleep(max(0.0, (run.heartbeat_at + stale_after - timezone.now()).total_seconds()) + 0.2)
    reaped = health_runs_reap(stale_after=stale_after)

    run.refresh_from_db()
    assert reaped == 1
    assert run.status == HealthRun.Status.FAILED and run.finished_at is not None
    assert "the worker running it stopped" in run.error
    # The task is acknowledged late: the broker hands its message out again, and it must not start the run over.
    assert health_run_execute(run_id=run.pk) is None
    again = HealthRun.objects.get(pk=run.pk)
    assert (again.status, again.error, again.done, again.finished_at) == (run.status, run.error, 0, run.finished_at)
    assert not again.results.exists()

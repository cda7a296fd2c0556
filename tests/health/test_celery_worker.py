"""Health runs through a real Celery worker: a subprocess on Redis, sharing the test's PostgreSQL database.

The other health tests call health_run_execute in the test process; these
prove the deployed path: the run queued on commit, a worker process taking
it from the broker, its results seen by other connections, and a worker
killed mid-run found by the reaper.
"""

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from health.models import HealthRun, ServiceHealth, ServiceStatsHour
from health.services import health_run_execute, health_run_start, health_runs_reap

BASE_DIR = Path(__file__).resolve().parents[2]
# A Redis database of its own: the module empties it before and after use.
BROKER_URL = "redis://127.0.0.1:6379/9"
# Lets the module tell its worker's PostgreSQL sessions apart from the test's own.
WORKER_APPLICATION_NAME = "server402-test-celery-worker"
SERVICE_IDS = ["celebrity-recognition", "scene-recognition", "food-recognition", "face-detection"]


def _why_not_runnable() -> str:
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        return ("a worker subprocess needs the test database on a server: SQLite's test database is in memory, "
                "which no other process can open; run with DATABASE_URL=postgres://... (CI does)")
    import redis

    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError as error:
        return f"a Celery worker needs Redis on 127.0.0.1:6379 as its broker ({error.__class__.__name__}: {error})"
    return ""


_not_runnable = _why_not_runnable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_not_runnable), reason=_not_runnable)]


class Worker:
    """One `celery worker` process group, its output kept in a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, log: Path, environment: dict[str, str]):
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "server402", "worker", "--pool", "prefork", "--concurrency", "2",
             "--loglevel", "INFO", "--hostname", f"health-test-{uuid.uuid4().hex[:8]}@%h",
             "--without-mingle", "--without-gossip", "--without-heartbeat"],
            cwd=BASE_DIR, env=environment, stdout=self._log_file, stderr=subprocess.STDOUT,
            # Its own process group, so one signal reaches the pool's children too.
            start_new_session=True,
        )
        self.killed = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def exited(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when the machine or the OOM killer takes a worker."""
        if not self.killed:
            self.killed = True
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self._log_file.close()


def _database_url() -> str:
    """The test database (pytest-django's, not the configured one) as the worker's DATABASE_URL."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return (f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'])}"
            f"?application_name={WORKER_APPLICATION_NAME}")


def _forget_broker_connections(app) -> None:
    # The app keeps its broker connection pool and producers from its first publish on (Celery resets the
    # same two after a fork); without them, the next publish connects to the broker configured now.
    app._pool = None
    app.amqp._producer_pool = None


def _wait_until_worker_sessions_end(timeout: float = 10) -> None:
    # A killed worker's PostgreSQL sessions end when the server notices; one still there would block the
    # flush after the test or the test database's DROP at the end of the session.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND application_name = %s", [WORKER_APPLICATION_NAME])
            if not cursor.fetchone()[0]:
                return
        time.sleep(0.1)


@pytest.fixture
def celery_worker(committed_db, upstream_emulator, tmp_path):
    """A real worker on BROKER_URL sharing the test database; the test process's Celery publishes there too."""
    import kombu.pools
    import redis

    from server402.celery import app

    # Two sessions at once (xdist workers, two checkouts) would take each other's runs from the shared broker.
    lock = open(Path(tempfile.gettempdir()) / f"server402-test-celery-broker-{BROKER_URL.rsplit('/', 1)[1]}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    broker = redis.Redis.from_url(BROKER_URL)
    saved = app.conf.broker_url, app.conf.broker_transport_options
    worker = None
    try:
        # Messages left by a session that was killed would be taken for this session's runs.
        broker.flushdb()
        app.conf.broker_url, app.conf.broker_transport_options = BROKER_URL, {}
        _forget_broker_connections(app)
        worker = Worker(tmp_path / "worker.log", {
            **os.environ,
            "SERVER402_ENV_FILE": "",
            "DJANGO_SETTINGS_MODULE": "server402.settings",
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": BROKER_URL,
            "REDIS_URL": BROKER_URL,
            "ALIBABA_CLOUD_ENDPOINT": upstream_emulator,
        })
        yield worker
    finally:
        if worker is not None:
            worker.kill()
            _wait_until_worker_sessions_end()
        app.conf.broker_url, app.conf.broker_transport_options = saved
        kombu.pools.reset()
        _forget_broker_connections(app)
        broker.flushdb()
        broker.close()
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _wait_for_run(run: HealthRun, worker: Worker, done, what: str, timeout: float) -> HealthRun:
    deadline = time.monotonic() + timeout
    while True:
        run.refresh_from_db()
        if done(run):
            return run
        if worker.exited():
            pytest.fail(f"the worker exited while waiting for {what} ({run}); its output:\n{worker.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s ({run}); the worker's output:\n{worker.output()}")
        time.sleep(0.2)


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

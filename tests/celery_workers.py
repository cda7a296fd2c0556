"""Real Celery workers for tests: subprocesses on Redis that share the test's PostgreSQL database.

Most tests call a task's function in the test process; the tests that use
these prove the deployed path: work queued on commit, a worker process taking
it from the broker, its writes seen by other connections, and a worker killed
with SIGKILL midway. The `celery_workers` fixture (tests/conftest.py) hands
out a CeleryWorkers: `start(**environment)` starts a worker, as many as a test
needs (one after another, once the first is killed).
"""

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[1]
# A Redis database of its own: it is emptied before and after use.
BROKER_URL = "redis://127.0.0.1:6379/9"
# Tells the workers' PostgreSQL sessions apart from the test's own.
WORKER_APPLICATION_NAME = "server402-test-celery-worker"

T = TypeVar("T")


def why_not_runnable() -> str:
    """Why a real worker cannot run in this session ("" when it can): for a module's skipif."""
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        return ("a worker subprocess needs the test database on a server: SQLite's test database is in memory, "
                "which no other process can open; run with DATABASE_URL=postgres://... (CI does)")
    import redis

    try:
        redis.Redis.from_url(BROKER_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except redis.RedisError as error:
        return f"a Celery worker needs Redis on 127.0.0.1:6379 as its broker ({error.__class__.__name__}: {error})"
    return ""


class ProcessGroup:
    """A subprocess in a session of its own, so one signal reaches its children too, its output kept in a file
    (a pipe nobody reads would fill and block it). Subclasses start it with `_start`."""

    def __init__(self, log: Path):
        self.log = log
        self._log_file = log.open("ab")
        self.process: subprocess.Popen | None = None
        self.killed = False

    def _start(self, command: list[str], environment: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, cwd=BASE_DIR, env=environment, stdout=self._log_file,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def exited(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL to the whole group: no shutdown handler runs, as when the machine or the OOM killer takes it.
        The kernel closes its sockets, so PostgreSQL sees its sessions end."""
        if not self.killed:
            self.killed = True
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)
        self._log_file.close()


class Worker(ProcessGroup):
    """One `celery worker` process group: the pool's children are in it too."""

    def __init__(self, log: Path, environment: dict[str, str]):
        super().__init__(log)
        self._start([sys.executable, "-m", "celery", "-A", "server402", "worker", "--pool", "prefork",
                     "--concurrency", "2", "--loglevel", "INFO", "--hostname", f"test-{uuid.uuid4().hex[:8]}@%h",
                     "--without-mingle", "--without-gossip", "--without-heartbeat"], environment)


def database_url(application_name: str = WORKER_APPLICATION_NAME) -> str:
    """The test database (pytest-django's, not the configured one) as a worker's DATABASE_URL; its sessions
    carry `application_name` in pg_stat_activity."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return (f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{quote(db['NAME'])}"
            f"?application_name={quote(application_name)}")


def forget_broker_connections(app) -> None:
    # The app keeps its broker connection pool and producers from its first publish on (Celery resets the
    # same two after a fork); without them, the next publish connects to the broker configured now.
    app._pool = None
    app.amqp._producer_pool = None


def wait_until_worker_sessions_end(timeout: float = 10) -> None:
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


def wait_for(read: Callable[[], T], done: Callable[[T], bool], *, what: str, timeout: float,
             worker: Worker | None = None, interval: float = 0.1) -> T:
    """read() again and again until done(it); the test fails at the deadline, or as soon as `worker` exits
    (a worker that is expected to be dead is not given). The worker's output goes in the failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if worker is not None and worker.exited():
            pytest.fail(f"the worker exited while waiting for {what} ({value}); its output:\n{worker.output()}")
        if time.monotonic() > deadline:
            output = f"; the worker's output:\n{worker.output()}" if worker is not None else ""
            pytest.fail(f"no {what} within {timeout:.0f} s ({value}){output}")
        time.sleep(interval)


class CeleryWorkers:
    """The test's broker (BROKER_URL, which the test process's Celery publishes to meanwhile) and the workers
    started on it. Used as a context manager: on leaving, every worker is killed and the broker emptied."""

    def __init__(self, directory: Path, *, upstream_endpoint: str):
        self.directory = directory
        self.upstream_endpoint = upstream_endpoint
        self.workers: list[Worker] = []
        self._lock = None
        self._broker = None
        self._saved = None

    def __enter__(self) -> "CeleryWorkers":
        import redis

        from server402.celery import app

        # Two sessions at once (xdist workers, two checkouts) would take each other's messages from the broker.
        self._lock = open(Path(tempfile.gettempdir()) / f"server402-test-celery-broker-{BROKER_URL.rsplit('/', 1)[1]}"
                          f".lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._broker = redis.Redis.from_url(BROKER_URL)
            # Messages left by a session that was killed would be taken for this session's.
            self._broker.flushdb()
            self._saved = app.conf.broker_url, app.conf.broker_transport_options
            app.conf.broker_url, app.conf.broker_transport_options = BROKER_URL, {}
            forget_broker_connections(app)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def start(self, **environment: str) -> Worker:
        """A new worker; `environment` adds to (or overrides) its settings, e.g. ALIBABA_CLOUD_ATTEMPTS="1"."""
        worker = Worker(self.directory / f"worker-{len(self.workers) + 1}.log", {
            **os.environ,
            "SERVER402_ENV_FILE": "",
            "DJANGO_SETTINGS_MODULE": "server402.settings",
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": BROKER_URL,
            "REDIS_URL": BROKER_URL,
            "ALIBABA_CLOUD_ENDPOINT": self.upstream_endpoint,
            **{name: str(value) for name, value in environment.items()},
        })
        self.workers.append(worker)
        return worker

    def __exit__(self, *exc_info) -> None:
        import kombu.pools

        from server402.celery import app

        try:
            for worker in self.workers:
                worker.kill()
            if self.workers:
                wait_until_worker_sessions_end()
        finally:
            if self._saved is not None:
                app.conf.broker_url, app.conf.broker_transport_options = self._saved
                kombu.pools.reset()
                forget_broker_connections(app)
            if self._broker is not None:
                self._broker.flushdb()
                self._broker.close()
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

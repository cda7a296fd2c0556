"""Real gunicorn servers for tests: subprocesses serving Server402 on loopback, sharing the test's PostgreSQL and Redis.

The way production runs it: `python -m gunicorn server402.wsgi` from the
repository root, so ./gunicorn.conf.py applies (worker class, timeouts, request
limits), with its workers and threads from WEB_CONCURRENCY and WEB_THREADS.
Every server shares the test database (committed rows only), the test broker's
Redis database as its cache and Celery broker (tests/celery_workers.py), and
calls the upstream emulator of the test process.

The `gunicorn_servers` fixture (tests/production/conftest.py) hands out a
GunicornServers: `start(**environment)` starts one server, `start_many(count)`
several at once; `gunicorn_server` is one server, for tests that need just one.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.celery_workers import BROKER_URL, ProcessGroup, database_url

# Each server's PostgreSQL sessions carry this name and its number, to tell them apart from the test's own and
# the Celery workers' (a fault test may end one server's sessions) and to wait until they are gone.
SERVER_APPLICATION_NAME = "server402-test-gunicorn"
# Asked until it answers 200; a server without a readiness endpoint answers it 404, and is asked the fallback.
READINESS_PATH = "/readyz"
FALLBACK_READINESS_PATH = "/api/catalog/search?q=face"
START_TIMEOUT_SECONDS = 60
# Attempts at a port: one chosen free may be taken by another process before gunicorn binds it.
BIND_ATTEMPTS = 3


def free_port() -> int:
    """A loopback port nobody listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GunicornServer(ProcessGroup):
    """One gunicorn process group (arbiter and workers); `url` is its base URL, e.g. http://127.0.0.1:40123."""

    def __init__(self, *, name: str, log: Path, environment: dict[str, str]):
        super().__init__(log)
        self.name = name
        self.application_name = f"{SERVER_APPLICATION_NAME}-{name}"
        self._environment = environment
        self.port = 0
        self._spawn()

    def _spawn(self) -> None:
        self.port = free_port()
        self._start([sys.executable, "-m", "gunicorn", "server402.wsgi", "--bind", f"127.0.0.1:{self.port}"],
                    {**self._environment, "PORT": str(self.port), "DATABASE_URL": database_url(self.application_name)})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until the server answers its readiness probe with 200; the test fails if it exits or the deadline
        passes, with the server's output. A server that lost its port to another process starts on a new one."""
        deadline = time.monotonic() + timeout
        attempts = 1
        last = "no answer yet"
        while True:
            if self.exited():
                if "Address already in use" in self.output() and attempts < BIND_ATTEMPTS:
                    attempts += 1
                    self._spawn()
                    continue
                pytest.fail(f"gunicorn server {self.name} exited (status {self.process.returncode}) while starting; "
                            f"its output:\n{self.output()}")
            try:
                answer = httpx.get(self.url + READINESS_PATH, timeout=5)
                if answer.status_code == 404:
                    answer = httpx.get(self.url + FALLBACK_READINESS_PATH, timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.request.url.path} answered {answer.status_code}: {answer.text[:300]}"
            except httpx.TransportError as error:
                last = f"{error.__class__.__name__}: {error}"
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn server {self.name} not ready within {timeout:.0f} s ({last}); "
                            f"its output:\n{self.output()}")
            time.sleep(0.1)


def server_sessions() -> int:
    """The PostgreSQL sessions the test's gunicorn servers hold on the test database now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name LIKE %s", [f"{SERVER_APPLICATION_NAME}-%"])
        return cursor.fetchone()[0]


def end_server_sessions(timeout: float = 10) -> None:
    """Wait until killed servers' sessions are gone; any still there at the deadline is ended by the server.

    A session left behind would block the flush after the test or the test
    database's DROP at the end of the session ("being accessed by other users").
    Their processes are dead, so ending them loses nothing.
    """
    deadline = time.monotonic() + timeout
    while server_sessions() and time.monotonic() < deadline:
        time.sleep(0.1)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name LIKE %s", [f"{SERVER_APPLICATION_NAME}-%"])


class GunicornServers:
    """The gunicorn servers a test starts. Used as a context manager: on leaving, every server is killed and
    its database sessions are gone. The test database and the test broker must be set up already (the
    `gunicorn_servers` fixture builds on `celery_workers`, which holds the broker)."""

    def __init__(self, directory: Path, *, upstream_endpoint: str):
        self.directory = directory
        self.upstream_endpoint = upstream_endpoint
        self.servers: list[GunicornServer] = []

    def __enter__(self) -> "GunicornServers":
        return self

    def _spawn(self, environment: dict[str, object]) -> GunicornServer:
        name = str(len(self.servers) + 1)
        server = GunicornServer(name=name, log=self.directory / f"gunicorn-{name}.log", environment={
            **os.environ,
            "SERVER402_ENV_FILE": "",
            "DJANGO_SETTINGS_MODULE": "server402.settings",
            "SECRET_KEY": settings.SECRET_KEY,
            "REDIS_URL": BROKER_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            # Every server prints the same public URL, as behind one load balancer: an x402 authorization
            # signed for a 402 of one server is for the same resource on another.
            "PUBLIC_BASE_URL": settings.PUBLIC_BASE_URL,
            "ALIBABA_CLOUD_ENDPOINT": self.upstream_endpoint,
            "WEB_CONCURRENCY": "2",
            "WEB_THREADS": "4",
            "PYTHONUNBUFFERED": "1",
            **{name: str(value) for name, value in environment.items()},
        })
        self.servers.append(server)
        return server

    def start(self, **environment: object) -> GunicornServer:
        """A new server, once it is ready; `environment` adds to (or overrides) its settings, e.g.
        WEB_CONCURRENCY=1, WEB_THREADS=2, WEB_CLIENT_TIMEOUT=2."""
        server = self._spawn(environment)
        server.wait_until_ready()
        return server

    def start_many(self, count: int, **environment: object) -> list[GunicornServer]:
        """`count` servers started together (they boot side by side), returned once every one is ready."""
        servers = [self._spawn(environment) for _ in range(count)]
        for server in servers:
            server.wait_until_ready()
        return servers

    def __exit__(self, *exc_info) -> None:
        try:
            for server in self.servers:
                try:
                    server.kill()
                except subprocess.TimeoutExpired:
                    pass  # a process SIGKILL does not end within 10 s is the kernel's; the others still go
        finally:
            if self.servers:
                end_server_sessions()

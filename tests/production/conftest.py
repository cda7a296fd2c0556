import pytest


@pytest.fixture
def gunicorn_servers(request, committed_db, tmp_path):
    """Real gunicorn servers (tests/production/servers.py) sharing the test's committed database and the
    Celery workers' Redis, as broker and cache; `gunicorn_servers.start()` starts one, `start_many(n)` several.

    Built on `celery_workers`: the broker's lock keeps two sessions from sharing
    its Redis database, which is emptied before and after, and the test may start
    workers on it too. Every server is killed, and its database sessions are gone,
    before the database is flushed. Only on PostgreSQL and Redis, like the workers.
    """
    from tests.celery_workers import why_not_runnable
    from tests.production.servers import GunicornServers

    # Checked before the workers' fixture, which needs Redis to set up. (committed_db is named above, not
    # reached through celery_workers: pytest-django sets up the test database only for the tests that name a
    # database fixture, and looks for it before any test runs.)
    if reason := why_not_runnable():
        pytest.skip(f"gunicorn servers share the Celery workers' database and Redis: {reason}")
    celery_workers = request.getfixturevalue("celery_workers")
    with GunicornServers(tmp_path, upstream_endpoint=celery_workers.upstream_endpoint) as servers:
        yield servers


@pytest.fixture
def gunicorn_server(gunicorn_servers):
    """One real gunicorn server (2 workers x 4 threads, ./gunicorn.conf.py), ready; its `.url` is the base URL."""
    return gunicorn_servers.start()


@pytest.fixture
def gated_upstream(settings):
    """A GatedUpstream (tests/production/gated_upstream.py), the configured upstream for the test."""
    from tests.production.gated_upstream import GatedUpstream

    upstream = GatedUpstream()
    settings.ALIBABA_CLOUD_ENDPOINT = upstream.endpoint
    yield upstream
    upstream.close()

"""Browser tests: Debian's Chromium, driven by Playwright, against the whole app on pytest-django's live_server.

Playwright never downloads a browser here (`playwright install` is not used):
it drives the Chromium at $CHROMIUM_PATH, or `chromium` / `chromium-browser`
on PATH (Debian's package; `make test` installs it through bin/ensure-chromium
when it can). Without one these tests skip with the reason, unless
SERVER402_REQUIRE_BROWSER=1 (CI sets it), when they fail instead.

Fixtures for the tests in this folder:
  server_url      the live server's base URL, with PUBLIC_BASE_URL and the upstream
                  (the app's own Alibaba Cloud emulator) pointed at it; rows are committed
  page            a Playwright page in a fresh browser context (own cookies), 1280x800
  operator_login  (username, password) of a staff user, created in the database
  signed_in_page  `page`, signed in as that user through the real login form, on the overview
  screenshot      screenshot(page, "overview") saves a full-page PNG for this test, returns its Path
  celery_worker   a real Celery worker in this process, on an in-memory broker the app publishes to

Artifacts go to $SERVER402_TEST_ARTIFACTS (default var/test-artifacts/), one
folder per test (its module and name), emptied when the test starts; a test
that fails leaves failure.png and failure.html of its page there too.
Every test here is marked `slow`.
"""

import logging
import os
import re
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OPERATOR_PASSWORD = "browser-test-password"
VIEWPORT = {"width": 1280, "height": 800}
REPORTS = pytest.StashKey[dict]()


def _chromium() -> tuple[str | None, str]:
    """The Chromium to drive, or None and why there is none."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"CHROMIUM_PATH={explicit} is not an executable file"
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found, ""
    return None, "no chromium or chromium-browser on PATH (apt-get install chromium, or set CHROMIUM_PATH)"


def _no_browser(reason: str):
    if os.environ.get("SERVER402_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests cannot run: {reason}; SERVER402_REQUIRE_BROWSER=1 requires them", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


# --- every test here is slow; reports kept for the failure screenshot ---------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    # tryfirst: before `-m "not slow"` deselects.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


# --- the first request -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def urlconf_imported():
    """The URLconf imported (every view, DRF, the x402 SDK) before any page is asked for.

    Otherwise the live server's first request imports it, within the first navigation's 10 s: 2 s on an
    idle two-CPU machine, over 10 s under -n 4 with other work going on, which failed each worker's first test.
    """
    from django.urls import get_resolver

    assert get_resolver().url_patterns


# --- the browser ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """One headless Chromium per test process (each xdist worker has its own)."""
    executable, reason = _chromium()
    if executable is None:
        _no_browser(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -r requirements.txt)")

    # Playwright's sync API keeps an asyncio event loop running in this thread for as
    # long as it is started, and Django refuses ORM calls from a thread with a running
    # loop (SynchronousOnlyOperation), though nothing here is async. So while the browser
    # is up (until this test process ends: later transactional tests of this worker run
    # in the same thread), Django is told to allow them. Only browser tests set this.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # Chromium's sandbox needs user namespaces a root process may not have.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        chromium = playwright.chromium.launch(executable_path=executable, headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def server_url(committed_db, live_server, settings):
    """The live server's URL; links and health checks (the app's own emulator) point at it."""
    settings.PUBLIC_BASE_URL = live_server.url
    settings.ALIBABA_CLOUD_ENDPOINT = f"{live_server.url}/sandbox/aliyun/{{product}}"
    return live_server.url


# --- artifacts --------------------------------------------------------------------------------------------------

@pytest.fixture
def artifact_dir(request) -> Path:
    """This test's artifact folder (emptied now; made when something is saved). Unique under xdist."""
    root = Path(os.environ.get("SERVER402_TEST_ARTIFACTS") or REPO / "var" / "test-artifacts")
    name = f"{request.node.path.stem}.{request.node.name}"
    folder = root / re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:150]
    shutil.rmtree(folder, ignore_errors=True)
    return folder


@pytest.fixture
def screenshot(artifact_dir):
    """screenshot(page, "overview") -> the Path of the full-page PNG saved as <test's folder>/overview.png."""

    def save(page, name: str) -> Path:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        path = artifact_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


# --- pages ------------------------------------------------------------------------------------------------------

@pytest.fixture
def page(browser, server_url, request, screenshot, artifact_dir):
    """A page in a fresh context (no cookies) whose relative URLs go to the live server.

    Uncaught JavaScript errors, 5xx answers and anything the Content-Security-Policy
    blocked (an inline script or style the page relied on) are collected; a test
    that passed with any of them errors at teardown. A failed test leaves failure.png/.html.
    """
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(base_url=server_url, viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []

    def server_error(response):
        if response.status >= 500:
            problems.append(f"{response.status} from {response.request.method} {response.url}")

    def policy_violation(message):
        if "Content Security Policy" in message.text:
            problems.append(f"blocked by the Content-Security-Policy: {message.text}")

    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("console", policy_violation)
    page.on("response", server_error)
    yield page

    reports = request.node.stash.get(REPORTS, {})
    failed = any(report.failed for report in reports.values())
    if failed:
        try:
            screenshot(page, "failure")
            (artifact_dir / "failure.html").write_text(page.content())
        except PlaywrightError:
            pass
    context.close()
    if problems and not failed:
        pytest.fail("the browser saw problems:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def operator_login(committed_db, django_user_model) -> tuple[str, str]:
    """A staff operator in the (committed) database; returns (username, password)."""
    django_user_model.objects.create_user("operator", password=OPERATOR_PASSWORD, is_staff=True)
    return "operator", OPERATOR_PASSWORD


def sign_in(page, username: str, password: str):
    """Fill in and send the login form of the page (which must be /dashboard/login/)."""
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.fixture
def signed_in_page(page, operator_login):
    """`page`, signed in as a staff operator through the login form; it is on the overview (/dashboard/)."""
    from playwright.sync_api import expect

    page.goto("/dashboard/login/")
    sign_in(page, *operator_login)
    expect(page).to_have_url(re.compile(r"/dashboard/$"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return page


# --- a Celery worker -------------------------------------------------------------------------------------------

# What Celery's logging setup writes into os.environ; put back afterwards.
_CELERY_ENVIRONMENT = ("CELERY_LOG_LEVEL", "CELERY_LOG_FILE", "_MP_FORK_LOGLEVEL_", "_MP_FORK_LOGFILE_",
                       "_MP_FORK_LOGFORMAT_")


def _forget_broker_connections(app) -> None:
    # The app keeps its broker connection pool and producers from its first publish on; without them, the
    # next publish (from a live-server thread too) connects to the broker configured now.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_worker(committed_db, monkeypatch):
    """A real Celery worker of server402's app, in a thread of this process, for the length of the test.

    The app publishes to an in-memory broker meanwhile (kombu's memory:// transport is shared by every
    thread of the process), so a task queued anywhere in this process (a view of the live server queuing
    a health run on commit) is taken from the broker and run by this worker (the `threads` pool) the way
    the deployed worker runs it. The worker's threads open their own database connections; rows are
    committed (committed_db), so they see what the live server wrote (on SQLite, the test database is
    an in-memory database shared by the process's connections).

    Returns a namespace: `worker` (the WorkController) and `executed`, [(task name, args)] in the
    order the worker started them.
    """
    from types import SimpleNamespace

    import kombu.pools
    from celery import signals
    from celery.contrib.testing.worker import start_worker
    from django import db

    from server402.celery import app

    executed: list[tuple[str, tuple]] = []

    def task_started(sender=None, task=None, args=None, **kwargs):
        executed.append((task.name, tuple(args or ())))

    def close_the_tasks_connections(**kwargs):
        # The pool's threads outlive the test, and their connections (CONN_MAX_AGE) with them: one left open
        # keeps PostgreSQL from dropping the test database at the end of the session.
        db.connections.close_all()

    def leave_logging_alone(**kwargs):
        # A receiver of setup_logging tells Celery the logging is configured: it keeps Django's (and
        # pytest's) handlers instead of taking over the root logger.
        return None

    saved_conf = app.conf.broker_url, app.conf.broker_transport_options
    saved_environment = {name: os.environ.get(name) for name in _CELERY_ENVIRONMENT}
    # Celery's Django fixup runs Django's system checks when a worker starts: seconds, for nothing here.
    monkeypatch.setenv("CELERY_SKIP_CHECKS", "1")
    signals.setup_logging.connect(leave_logging_alone)
    signals.task_prerun.connect(task_started)
    signals.task_postrun.connect(close_the_tasks_connections)
    try:
        app.conf.broker_url = "memory://localhost/"
        app.conf.broker_transport_options = {"polling_interval": 0.05}
        _forget_broker_connections(app)
        app.control.purge()  # what an earlier test of this process may have left
        # perform_ping_check needs a result backend; the app has none (task_ignore_result).
        root = logging.getLogger()
        root_handlers, root_level = root.handlers[:], root.level
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False,
                          shutdown_timeout=30) as worker:
            # The fixup also calls django.setup() again, which applies settings.LOGGING afresh: pytest's
            # capturing handlers go back on the root logger.
            root.handlers[:] = root_handlers
            root.setLevel(root_level)
            yield SimpleNamespace(worker=worker, executed=executed)
    finally:
        signals.task_prerun.disconnect(task_started)
        signals.task_postrun.disconnect(close_the_tasks_connections)
        signals.setup_logging.disconnect(leave_logging_alone)
        app.conf.broker_url, app.conf.broker_transport_options = saved_conf
        kombu.pools.reset()
        _forget_broker_connections(app)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

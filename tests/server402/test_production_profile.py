"""The production profile: probes, request ids and structured logs, security headers, HTTPS when asked."""

import io
import json
import logging
import logging.config
import os
import subprocess
import sys

import pytest
from celery import signals
from django.conf import settings
from django.core.cache import caches
from django.test import Client

from server402.request_context import RequestIdFilter, current_request_id
from tests.server402.test_settings import ROOT, settings_of

HTTPS = {"PUBLIC_BASE_URL": "https://s402.example"}


@pytest.fixture
def broker_unreachable():
    """The Celery app's broker pointed at a port where nothing listens, for one test."""
    from server402.celery import app
    from tests.celery_workers import forget_broker_connections

    saved = app.conf.broker_url, app.conf.broker_transport_options
    app.conf.broker_url, app.conf.broker_transport_options = "redis://127.0.0.1:9/0", {}
    forget_broker_connections(app)
    yield
    app.conf.broker_url, app.conf.broker_transport_options = saved
    forget_broker_connections(app)


def test_liveness_answers_without_the_database(client):
    # No django_db mark: any query here would fail the test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_readiness_checks_the_database_the_cache_and_the_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.django_db
def test_readiness_is_503_and_names_the_broker_when_the_broker_is_down(client, broker_unreachable):
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_readiness_is_503_and_names_the_cache_when_redis_is_down(client, settings):
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("the embedded file cache has no server to lose; run with REDIS_URL (CI does)")
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:9/0"}}
    try:
        response = client.get("/readyz")
    finally:
        caches["default"].close()
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["ok"] is False


@pytest.mark.django_db
def test_probes_pass_neither_the_host_check_nor_the_https_redirect(settings):
    settings.SECURE_SSL_REDIRECT = True
    probe = Client(HTTP_HOST="10.1.2.3:8000")  # a pod's address, which ALLOWED_HOSTS does not list
    assert probe.get("/healthz").status_code == 200
    assert probe.get("/readyz").status_code == 200
    # Every other path still goes through both.
    assert probe.get("/llms.txt").status_code == 400
    assert Client().get("/llms.txt").status_code == 301


@pytest.fixture
def access_lines():
    """The access log as LOG_FORMAT=json writes it: the settings' own formatter and filter, one parsed line each."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = {key: value for key, value in settings.LOGGING["formatters"]["json"].items() if key != "()"}
    from pythonjsonlogger.json import JsonFormatter

    handler.setFormatter(JsonFormatter(**formatter))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("server402.access")
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


@pytest.mark.django_db
def test_every_answer_carries_a_request_id_and_logs_one_json_line_with_it(client, access_lines):
    response = client.get("/api/catalog/search", {"q": "face"})
    request_id = response["X-Request-Id"]
    assert len(request_id) == 32
    [line] = access_lines()
    assert line["request_id"] == request_id
    assert line["level"] == "INFO" and line["logger"] == "server402.access"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/catalog/search", 200)
    assert line["duration_ms"] >= 0
    assert client.get("/api/catalog/search", {"q": "face"})["X-Request-Id"] != request_id


@pytest.mark.django_db
def test_a_callers_request_id_is_kept_when_it_is_a_plain_token(client):
    assert client.get("/llms.txt", HTTP_X_REQUEST_ID="agent-run-42.call-7")["X-Request-Id"] == "agent-run-42.call-7"


@pytest.mark.django_db
@pytest.mark.parametrize("presented", ["short", "has space in it", "line\nbreak-injected", "x" * 65, '"quoted-id"'])
def test_a_request_id_that_could_forge_log_lines_is_replaced(client, presented):
    assert client.get("/llms.txt", HTTP_X_REQUEST_ID=presented)["X-Request-Id"] != presented


def test_a_celery_tasks_log_lines_carry_its_task_id():
    record = logging.LogRecord("jobs", logging.INFO, __file__, 1, "ran", None, None)
    signals.task_prerun.send(sender=None, task_id="task-123", task=None)
    RequestIdFilter().filter(record)
    assert record.request_id == "task-123"
    signals.task_postrun.send(sender=None, task_id="task-123", task=None)
    assert current_request_id.get() == "-"


@pytest.mark.django_db
def test_pages_forbid_inline_scripts_framing_and_sniffing(client):
    response = client.get("/dashboard/login/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_https_is_off_for_a_plain_http_public_url_and_on_for_an_https_one():
    fields = "(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS)"
    assert settings_of(fields) == "(False, False, False, 0)"
    assert settings_of(fields, **HTTPS) == "(True, True, True, 31536000)"
    # Each part can be asked for or turned off on its own (a proxy that redirects already, a staging host).
    turned_off = settings_of(fields, **HTTPS, SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="0")
    assert turned_off == "(True, True, False, 0)"
    assert settings_of(fields, SECURE_COOKIES="true") == "(True, True, False, 0)"


def test_the_log_format_is_json_in_live_mode_and_can_be_chosen():
    live = {"SERVER402_MODE": "live", "X402_PAY_TO": "0x" + "ab" * 20, "SECRET_KEY": "k" * 50,
            "X402_FACILITATOR_URL": "https://facilitator.example", **HTTPS}
    assert settings_of("s.LOG_FORMAT") == "plain"
    assert settings_of("s.LOG_FORMAT", **live) == "json"
    assert settings_of("s.LOG_FORMAT", LOG_FORMAT="json") == "json"


def test_the_deploy_check_is_clean_in_live_mode():
    env = {"PATH": os.environ["PATH"], "SERVER402_ENV_FILE": "", "SERVER402_VAR_DIR": "/tmp/server402-settings-test",
           "SERVER402_MODE": "live", "SECRET_KEY": "k" * 25 + "Q7x!pZ3#mB9@vL2$wR5^tY8&nK1*hJ4",
           "X402_PAY_TO": "0x" + "ab" * 20,
           "X402_FACILITATOR_URL": "https://facilitator.example", **HTTPS}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    # HSTS for every subdomain, and preloading it, are decisions for the domain's owner, not defaults.
    problems = [line for line in result.stderr.splitlines()
                if line.startswith("?:") and "W005" not in line and "W021" not in line]
    assert not problems, result.stderr


def gunicorn_settings(**environment) -> dict:
    env = {"PATH": os.environ["PATH"], **environment}
    program = ("import runpy, json; ns = runpy.run_path('gunicorn.conf.py'); "
               "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'timeout', 'graceful_timeout', "
               "'limit_request_field_size', 'control_socket_disable', 'CLIENT_TIMEOUT_SECONDS')}))")
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


def test_gunicorn_is_sized_from_the_environment():
    defaults = gunicorn_settings(PORT="9001")
    assert (defaults["bind"], defaults["workers"], defaults["threads"]) == (["127.0.0.1:9001"], 2, 4)
    sized = gunicorn_settings(WEB_BIND="0.0.0.0:8080", WEB_CONCURRENCY="5", WEB_THREADS="16", WEB_CLIENT_TIMEOUT="3")
    assert (sized["bind"], sized["workers"], sized["threads"], sized["CLIENT_TIMEOUT_SECONDS"]) == (
        ["0.0.0.0:8080"], 5, 16, 3)
    assert sized["control_socket_disable"] is True


def test_a_bad_gunicorn_value_stops_start_up_naming_it():
    with pytest.raises(AssertionError, match="WEB_THREADS='many' is not a whole number"):
        gunicorn_settings(WEB_THREADS="many")


def test_postgresql_connections_are_bounded_in_time_and_the_urls_own_parameters_win():
    options = "sorted(s.DATABASES['default']['OPTIONS'].items())"
    bounded = settings_of(options, DATABASE_URL="postgres://u@db:5432/x")
    assert "('connect_timeout', 5)" in bounded and "('keepalives', 1)" in bounded
    assert "('connect_timeout', 9)" in settings_of(options, DATABASE_URL="postgres://u@db:5432/x",
                                                        DATABASE_CONNECT_TIMEOUT="9")
    assert "('connect_timeout', 2)" in settings_of(options, DATABASE_URL="postgres://u@db:5432/x?connect_timeout=2")


def test_gunicorns_own_lines_are_json_when_the_apps_are():
    program = "import runpy; print('logconfig_dict' in runpy.run_path('gunicorn.conf.py'))"

    def configured(**environment):
        result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                                env={"PATH": os.environ["PATH"], **environment})
        assert result.returncode == 0, result.stderr
        return result.stdout.strip() == "True"

    assert not configured()
    assert configured(LOG_FORMAT="json")
    assert configured(SERVER402_MODE="live")
    assert not configured(SERVER402_MODE="live", LOG_FORMAT="plain")

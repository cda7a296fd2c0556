import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

from server402.environment import env_bool, env_evm_address, env_float, env_int, env_url

ROOT = Path(__file__).resolve().parents[2]


def start_django(**environment) -> subprocess.CompletedProcess:
    """Start Django in a fresh process with exactly these variables (plus PATH)."""
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": "s", "SERVER402_VAR_DIR": "/tmp/server402-settings-test",
           "SERVER402_ENV_FILE": "",
           **environment}
    env = {k: v for k, v in env.items() if v is not None}
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='server402.settings'; django.setup()"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)


def test_it_starts_with_nothing_but_a_secret_key():
    assert start_django().returncode == 0


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"SECRET_KEY": None}, "SECRET_KEY is not set"),
        ({"PORT": "eighty"}, "PORT='eighty' is not a whole number"),
        ({"PORT": "70000"}, "PORT=70000 is out of range"),
        ({"SERVER402_MODE": "production"}, "SERVER402_MODE='production' is not one of sandbox, live"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL='nosuchdb://x' is not a database URL"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL='http://127.0.0.1:6379' is not a redis/rediss URL"),
        ({"ALLOWED_HOSTS": " , "}, "ALLOWED_HOSTS is set but empty"),
        ({"SERVER402_MODE": "live", "PUBLIC_BASE_URL": "https://s402.example", "X402_PAY_TO": "0x" + "ab" * 20,
          "X402_FACILITATOR_URL": "https://facilitator.example"}, "SECRET_KEY must be at least 50 characters"),
        ({"X402_PAY_TO": "0x123"}, "X402_PAY_TO='0x123' is not an EVM address"),
        ({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI"}, "Set both ALIBABA_CLOUD_ACCESS_KEY_ID and"),
        ({"SERVER402_MODE": "live", "SECRET_KEY": "k" * 50, "PUBLIC_BASE_URL": "https://s402.example"},
         "Live mode needs X402_PAY_TO and X402_FACILITATOR_URL"),
        ({"SERVER402_MODE": "live", "SECRET_KEY": "k" * 50}, "PUBLIC_BASE_URL must be an https URL in live mode"),
        ({"HEALTH_CHECK_INTERVAL_SECONDS": "soon"}, "HEALTH_CHECK_INTERVAL_SECONDS='soon' is not a whole number"),
        ({"HEALTH_CHECK_CONCURRENCY": "0"}, "HEALTH_CHECK_CONCURRENCY=0 is out of range"),
        ({"HEALTH_RUN_STALE_SECONDS": "10"}, "HEALTH_RUN_STALE_SECONDS=10 is out of range"),
    ],
)
def test_it_refuses_to_start_on_a_bad_value(environment, message):
    result = start_django(**environment)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def settings_of(code: str, **environment) -> str:
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": "s", "SERVER402_VAR_DIR": "/tmp/server402-settings-test",
           "SERVER402_ENV_FILE": "", **environment}
    program = f"import os; os.environ['DJANGO_SETTINGS_MODULE']='server402.settings'; " \
              f"from django.conf import settings as s; print({code})"
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_debug_is_off_unless_asked():
    assert settings_of("s.DEBUG") == "False"
    assert settings_of("s.DEBUG", DEBUG="true") == "True"


def test_live_mode_sends_cookies_and_redirects_over_https_only():
    live = {"SERVER402_MODE": "live", "PUBLIC_BASE_URL": "https://s402.example", "X402_PAY_TO": "0x" + "ab" * 20,
            "X402_FACILITATOR_URL": "https://facilitator.example", "SECRET_KEY": "k" * 50}
    assert settings_of("(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS)",
                       **live) == "(True, True, True, 31536000)"
    assert settings_of("s.X402_NETWORK", **live) == "eip155:8453"
    assert settings_of("s.X402_NETWORK") == "eip155:84532"


@pytest.mark.parametrize("name, url, shown", [
    ("REDIS_URL", "http://user:hunter2@cache:6379", "***@cache:6379"),
    ("DATABASE_URL", "nosuch://u:hunter2@db/x", "nosuch://***@db/x"),
    ("X402_FACILITATOR_URL", "ftp://u:hunter2@facilitator", "ftp://***@facilitator"),
])
def test_a_bad_url_is_reported_without_its_password(name, url, shown):
    result = start_django(**{name: url})
    assert result.returncode != 0 and "hunter2" not in result.stderr
    assert shown in result.stderr


@pytest.mark.django_db
def test_every_answer_names_the_mode(client):
    assert client.get("/llms.txt")["X-Server402-Mode"] == "sandbox"


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)])
def test_env_bool_reads_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", not expected) is expected


def test_typed_helpers_fail_loudly(monkeypatch):
    monkeypatch.setenv("N", "1.5")
    with pytest.raises(ImproperlyConfigured, match="N='1.5' is not a whole number"):
        env_int("N", 1)
    monkeypatch.setenv("U", "ftp://files")
    with pytest.raises(ImproperlyConfigured, match="not a http/https URL"):
        env_url("U")
    monkeypatch.setenv("A", "0x" + "g" * 40)
    with pytest.raises(ImproperlyConfigured, match="not an EVM address"):
        env_evm_address("A")


def test_the_configured_cache_round_trips():
    """With REDIS_URL this is Redis, as in production; without it, the shared file cache."""
    expected = "RedisCache" if settings.REDIS_URL else "FileCache"
    cache = caches["default"]
    assert type(cache).__name__ == expected
    cache.set("server402-test", {"ok": 1}, 5)
    assert cache.get("server402-test") == {"ok": 1}
    cache.delete("server402-test")


def test_celery_uses_redis_when_given_and_files_otherwise():
    from server402.celery import app

    assert app.conf.broker_url == (settings.REDIS_URL or "filesystem://")


def test_a_timeout_that_is_not_a_number_fails_at_start_up():
    os.environ["SERVER402_TEST_FLOAT"] = "soon"
    try:
        with pytest.raises(ImproperlyConfigured, match="SERVER402_TEST_FLOAT='soon' is not a number"):
            env_float("SERVER402_TEST_FLOAT", 1.0, minimum=0, maximum=2)
        os.environ["SERVER402_TEST_FLOAT"] = "3.5"
        with pytest.raises(ImproperlyConfigured, match="out of range"):
            env_float("SERVER402_TEST_FLOAT", 1.0, minimum=0, maximum=2)
    finally:
        del os.environ["SERVER402_TEST_FLOAT"]


def test_the_sandbox_upstream_is_the_web_servers_port_whatever_port_a_worker_is_given():
    # honcho gives every process its own PORT; make run pins the web server's.
    endpoint = settings_of("s.ALIBABA_CLOUD_ENDPOINT", PORT="5100", SERVER402_WEB_PORT="8000")
    assert endpoint == "http://127.0.0.1:8000/sandbox/aliyun/{product}"


def test_live_mode_ignores_the_web_port_for_its_upstream():
    endpoint = settings_of("s.ALIBABA_CLOUD_ENDPOINT", SERVER402_MODE="live", SECRET_KEY="k" * 50,
                           PUBLIC_BASE_URL="https://s402.example", X402_PAY_TO="0x" + "ab" * 20,
                           X402_FACILITATOR_URL="https://facilitator.example", SERVER402_WEB_PORT="8000")
    assert endpoint == "https://{product}.cn-shanghai.aliyuncs.com"


def test_the_health_schedule_follows_its_interval_and_zero_turns_it_off():
    assert settings_of("s.CELERY_BEAT_SCHEDULE['scheduled-health-run']['schedule']",
                       HEALTH_CHECK_INTERVAL_SECONDS="60") == "60.0"
    assert settings_of("'scheduled-health-run' in s.CELERY_BEAT_SCHEDULE", HEALTH_CHECK_INTERVAL_SECONDS="0") == "False"

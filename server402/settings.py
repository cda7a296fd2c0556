"""Server402 settings: one module, every value from the environment.

A malformed value stops start-up with a message naming the variable (see
server402/environment.py). Secrets are never given defaults that could reach
production: SECRET_KEY must be set (`make run` writes a random one to .env).
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from server402.environment import (
    env_bool,
    env_choice,
    env_evm_address,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
    masked,
)
from server402.request_context import JSON_LOG_FORMATTER

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("SERVER402_VAR_DIR", str(BASE_DIR / "var")))

# .env is a convenience for local runs; variables already in the environment
# win. SERVER402_ENV_FILE names another file, or none when empty.
_env_file = os.environ.get("SERVER402_ENV_FILE", str(BASE_DIR / ".env"))
if _env_file:
    environ.Env.read_env(_env_file)

# --- Mode -------------------------------------------------------------------
# sandbox: the built-in Alibaba Cloud emulator and an in-process x402 facilitator
# on Base Sepolia. live: the real upstream and a remote facilitator on Base.
SERVER402_MODE = env_choice("SERVER402_MODE", "sandbox", ("sandbox", "live"))
SANDBOX = SERVER402_MODE == "sandbox"

SECRET_KEY = env_str("SECRET_KEY", required=True)
if not SANDBOX and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in live mode.")
DEBUG = env_bool("DEBUG", False)

PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
# Every absolute URL Server402 prints (service pages, 402 bodies, llms.txt)
# comes from here, never from the request's Host header.
PUBLIC_BASE_URL = env_url("PUBLIC_BASE_URL", f"http://localhost:{PORT}")
if not SANDBOX and not PUBLIC_BASE_URL.startswith("https://"):
    raise ImproperlyConfigured("PUBLIC_BASE_URL must be an https URL in live mode.")

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", urlsplit(PUBLIC_BASE_URL).hostname]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [PUBLIC_BASE_URL])

# HTTPS: on by default when the public URL is https (always in live mode), and each part can be asked for
# or turned off. Cookies never travel in clear, browsers are told to stay on HTTPS, plain HTTP is redirected.
_HTTPS = PUBLIC_BASE_URL.startswith("https://")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", _HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if _HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto (only a proxy that sets it itself, always).
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Headers on every answer (Django's defaults made explicit): no MIME sniffing, no framing, no referrer
# beyond this origin, a window of its own. The dashboard's script and styles are files served from this
# origin (static/), so the policy forbids everything inline: an injected <script> cannot run.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# --- Upstream: Alibaba Cloud ------------------------------------------------
ALIBABA_CLOUD_ACCESS_KEY_ID = env_str("ALIBABA_CLOUD_ACCESS_KEY_ID")
ALIBABA_CLOUD_ACCESS_KEY_SECRET = env_str("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
if bool(ALIBABA_CLOUD_ACCESS_KEY_ID) != bool(ALIBABA_CLOUD_ACCESS_KEY_SECRET):
    raise ImproperlyConfigured(
        "Set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or neither."
    )
ALIBABA_CLOUD_REGION = env_str("ALIBABA_CLOUD_REGION", "cn-shanghai")
# HMAC-SHA1 is the RPC signature of seed 003; ACS3-HMAC-SHA256 is the newer one.
ALIBABA_CLOUD_SIGNATURE = env_choice("ALIBABA_CLOUD_SIGNATURE", "hmac-sha1", ("hmac-sha1", "acs3-hmac-sha256"))
# The official SDKs' defaults: 5 s to connect, 10 s to read.
ALIBABA_CLOUD_CONNECT_TIMEOUT = env_float("ALIBABA_CLOUD_CONNECT_TIMEOUT", 5.0, minimum=0.05, maximum=60)
ALIBABA_CLOUD_READ_TIMEOUT = env_float("ALIBABA_CLOUD_READ_TIMEOUT", 10.0, minimum=0.05, maximum=300)
# Attempts per call, counting the first; only failures that are safe to repeat are retried.
ALIBABA_CLOUD_ATTEMPTS = env_int("ALIBABA_CLOUD_ATTEMPTS", 3, minimum=1, maximum=10)
# Async actions (TaggingAdImage...) answer with a job, polled through GetAsyncJobResult: the first poll
# after this many seconds, each next one twice as late, up to the maximum.
ALIBABA_CLOUD_POLL_SECONDS = env_float("ALIBABA_CLOUD_POLL_SECONDS", 0.5, minimum=0.01, maximum=60)
ALIBABA_CLOUD_POLL_MAX_SECONDS = env_float("ALIBABA_CLOUD_POLL_MAX_SECONDS", 10.0, minimum=ALIBABA_CLOUD_POLL_SECONDS,
                                           maximum=300)
# How long a synchronous call of an async action waits for its job; past it the caller gets a 504, uncharged
# (a job, `Prefer: respond-async`, waits up to JOB_TIMEOUT_SECONDS).
ALIBABA_CLOUD_ASYNC_WAIT_SECONDS = env_float("ALIBABA_CLOUD_ASYNC_WAIT_SECONDS", 30.0, minimum=0.1, maximum=600)

# The sandbox emulator (catalog/emulator.py) accepts only this published key
# pair, so a sandbox request can never be mistaken for a live one.
SANDBOX_ACCESS_KEY_ID = "LTAI5tServer402Sandbox"
SANDBOX_ACCESS_KEY_SECRET = "server402-sandbox-secret-not-a-secret"
# Milliseconds the emulator waits before answering (exercises timeouts and health runs).
SANDBOX_LATENCY_MS = env_int("SANDBOX_LATENCY_MS", 0, minimum=0, maximum=600_000)
# Where the upstream client sends requests, {product} filled in. The sandbox
# default is this server's own emulator over loopback.
# The web server's port: `make run` sets it, because honcho gives the Celery worker a PORT of its own.
_WEB_PORT = env_int("SERVER402_WEB_PORT", PORT, minimum=1, maximum=65535)
ALIBABA_CLOUD_ENDPOINT = env_url(
    "ALIBABA_CLOUD_ENDPOINT",
    f"http://127.0.0.1:{_WEB_PORT}/sandbox/aliyun/{{product}}/"
    if SANDBOX
    else f"https://{{product}}.{ALIBABA_CLOUD_REGION}.aliyuncs.com/",
)

# --- Payments: x402 -----------------------------------------------------------
X402_NETWORK = "eip155:84532" if SANDBOX else "eip155:8453"
# USDC on Base Sepolia (sandbox) and on Base mainnet (live).
X402_ASSET = (
    "0x036CbD53842c5426634e7929541eC2318f3dCF7e" if SANDBOX else "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
)
# The token's EIP-712 domain, which payers sign over (extra.name / extra.version).
X402_ASSET_DOMAIN = {"name": "USDC", "version": "2"} if SANDBOX else {"name": "USD Coin", "version": "2"}
# How long a payer may take to pay a 402 (PaymentRequirements.maxTimeoutSeconds).
X402_MAX_TIMEOUT_SECONDS = env_int("X402_MAX_TIMEOUT_SECONDS", 300, minimum=10, maximum=3600)
# A remote facilitator's base URL (/verify, /settle); unset, the sandbox verifies in-process.
X402_FACILITATOR_URL = env_url("X402_FACILITATOR_URL")
# Seconds to wait for the facilitator; settling waits for the chain, so it is generous.
X402_FACILITATOR_TIMEOUT = env_float("X402_FACILITATOR_TIMEOUT", 30.0, minimum=0.05, maximum=300)
# Sent as the Authorization header to a facilitator that wants one (e.g. "Bearer ...").
X402_FACILITATOR_AUTHORIZATION = env_str("X402_FACILITATOR_AUTHORIZATION")
# The sandbox payee is a well-known throwaway address: sandbox money is not real.
X402_PAY_TO = env_evm_address(
    "X402_PAY_TO", "0x000000000000000000000000000000000000dEaD" if SANDBOX else None
)
if not SANDBOX and not (X402_PAY_TO and X402_FACILITATOR_URL):
    raise ImproperlyConfigured("Live mode needs X402_PAY_TO and X402_FACILITATOR_URL.")

# How long a payment (and its token) stays usable after it is created or paid.
PAYMENT_TTL_SECONDS = env_int("PAYMENT_TTL_SECONDS", 86_400, minimum=60, maximum=90 * 86_400)
# The largest tool-call body accepted; larger ones are refused before any work.
TOOL_CALL_MAX_BODY_BYTES = env_int("TOOL_CALL_MAX_BODY_BYTES", 1_048_576, minimum=1024, maximum=20_971_520)
# Requests per minute one client address may make without an API key and without a payment (tool calls answered
# with a 402 price, payments created anonymously); past it they are answered 429. Keyed calls follow their key's
# own limits, paid ones their payment. 0 turns it off.
ANONYMOUS_RATE_LIMIT_PER_MINUTE = env_int("ANONYMOUS_RATE_LIMIT_PER_MINUTE", 120, minimum=0, maximum=1_000_000)
# Proxies in front of Server402 that append the address they were reached from to X-Forwarded-For: the client's
# address is the entry this many from the right. 0 (the default) trusts none: REMOTE_ADDR, the header ignored.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)

DEFAULT_PRICING_POLICY = env_str("SERVER402_DEFAULT_PRICING_POLICY", "aliyun-viapi")

# --- MCP (/mcp) -------------------------------------------------------------------
# Browser origins allowed to call /mcp besides PUBLIC_BASE_URL's own ("*" for any); agents send no Origin.
MCP_ALLOWED_ORIGINS = env_list("MCP_ALLOWED_ORIGINS", [])
# The largest JSON-RPC message accepted; tool arguments are image URLs and short strings.
MCP_MAX_BODY_BYTES = env_int("MCP_MAX_BODY_BYTES", 262_144, minimum=4096, maximum=TOOL_CALL_MAX_BODY_BYTES)
# Tools per tools/list page (the catalog is about 60), and how long a 2026-07-28 client may cache the list.
MCP_TOOLS_PAGE_SIZE = env_int("MCP_TOOLS_PAGE_SIZE", 100, minimum=1, maximum=1000)
MCP_TOOLS_TTL_SECONDS = env_int("MCP_TOOLS_TTL_SECONDS", 300, minimum=0, maximum=86_400)

# --- Async jobs (`Prefer: respond-async`) -------------------------------------------
# A finished job's result (or error) is kept this long, then purged: reading it answers not_found.
JOB_RESULT_TTL_SECONDS = env_int("JOB_RESULT_TTL_SECONDS", 86_400, minimum=60, maximum=30 * 86_400)
# A job not finished this long after it was submitted fails, uncharged (queue time and upstream time together).
JOB_TIMEOUT_SECONDS = env_int("JOB_TIMEOUT_SECONDS", 3600, minimum=10, maximum=7 * 86_400)
# Times a job is started; one whose worker died is started again until then, and failed after.
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1, maximum=10)
# Seconds a client is asked to wait between status reads (Retry-After).
JOB_RETRY_AFTER_SECONDS = env_int("JOB_RETRY_AFTER_SECONDS", 2, minimum=1, maximum=3600)

# --- Health checks and quality ------------------------------------------------
# Seconds between scheduled health runs over every published service; 0 turns the schedule off.
HEALTH_CHECK_INTERVAL_SECONDS = env_int("HEALTH_CHECK_INTERVAL_SECONDS", 900, minimum=0, maximum=7 * 86_400)
# Services checked at once by one run (a run over N services takes about N / concurrency probes).
HEALTH_CHECK_MAX_CONCURRENCY = 200
HEALTH_CHECK_CONCURRENCY = env_int("HEALTH_CHECK_CONCURRENCY", 10, minimum=1, maximum=HEALTH_CHECK_MAX_CONCURRENCY)
# Check results and hourly statistics older than this are purged by a scheduled task.
HEALTH_RESULT_RETENTION_DAYS = env_int("HEALTH_RESULT_RETENTION_DAYS", 30, minimum=1, maximum=3650)
# A running run that has not written a heartbeat for this long lost its worker and is marked failed.
# At least a minute: a heartbeat comes every 5 s, but one may wait 20 s for SQLite's write lock.
HEALTH_RUN_STALE_SECONDS = env_int("HEALTH_RUN_STALE_SECONDS", 120, minimum=60, maximum=86_400)
# Seconds the sums of a statistics window's closed hours stay cached (they no longer change; the
# current hour is always read live). 0 reads every hour live, for a small deployment or a debugger.
HEALTH_STATS_CACHE_SECONDS = env_int("HEALTH_STATS_CACHE_SECONDS", 3900, minimum=0, maximum=86_400)

# --- Catalog search -----------------------------------------------------------
CATALOG_SEARCH_MAX_LIMIT = 100
CATALOG_SEARCH_MAX_QUERY_LENGTH = 500

# --- Django -----------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_htmx",
    "catalog",
    "payments",
    "health",
    "jobs",
]

MIDDLEWARE = [
    # Probes first: they must pass neither the host check nor the HTTPS redirect (server402/process_health.py).
    "server402.process_health.process_health",
    "server402.request_context.request_context",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "server402.middleware.mode_header",
]

ROOT_URLCONF = "server402.urls"
WSGI_APPLICATION = "server402.wsgi.application"
ASGI_APPLICATION = "server402.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "server402.context_processors.mode",
            ],
        },
    },
]


def _database(url: str) -> dict:
    if urlsplit(url).scheme not in environ.Env.DB_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL={masked(url)!r} is not a database URL Django can use: unknown scheme "
            f"{urlsplit(url).scheme!r}"
        )
    config = environ.Env.db_url_config(url)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Web workers and the Celery worker share one file: WAL lets readers run
        # beside a writer, IMMEDIATE avoids deadlocked upgrades, timeout waits.
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        config["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
        config["CONN_HEALTH_CHECKS"] = True
        # A database that stops answering must not hang a request (or the retry of a paid call's last write,
        # server402/database_outages.py): connecting is bounded, and TCP keepalives notice a dead peer within
        # about a minute. The URL's own parameters win.
        options = config.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1, maximum=300))
        for name, value in {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                            "keepalives_count": 3}.items():
            options.setdefault(name, value)
    return config


VAR_DIR.mkdir(parents=True, exist_ok=True)
try:
    DATABASES = {
        "default": _database(env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'server402.sqlite3'}"))
    }
except (KeyError, ValueError) as error:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL Django can use: {error}") from None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss"))
# Seconds to connect to Redis, and for each of its answers (cache, rate limits, Celery broker). Redis answers in
# well under a millisecond; without a bound, a Redis that stops answering (a failover, a half-open connection)
# would hang every request that counts a rate limit or queues a job.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 1.0, minimum=0.05, maximum=60)
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "OPTIONS": {"socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                                      "socket_timeout": REDIS_SOCKET_TIMEOUT}}}
else:
    # Shared by every process of one machine, unlike the local-memory cache; culled by expiry first
    # (server402/file_cache.py), so live rate limits and sandbox jobs outlast the upstream nonces.
    CACHES = {
        "default": {
            "BACKEND": "server402.file_cache.FileCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
# Two deployments sharing one Redis database must not read each other's rate limits or statistics.
CACHES["default"]["KEY_PREFIX"] = env_str("CACHE_KEY_PREFIX", "server402")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "dashboard-login"
LOGIN_REDIRECT_URL = "dashboard-overview"
LOGOUT_REDIRECT_URL = "dashboard-login"
# Seconds a dashboard sign-in lasts; after it the operator signs in again and comes back to the page.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=60, maximum=30 * 86_400)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app folders so a fresh checkout needs no collectstatic.
WHITENOISE_USE_FINDERS = True

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "EXCEPTION_HANDLER": "server402.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
# /openapi.json (catalog/openapi.py): the /api/ views, with one path per published tool.
SPECTACULAR_SETTINGS = {
    "TITLE": "Server402",
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "PREPROCESSING_HOOKS": ["catalog.openapi.api_endpoints_only"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "catalog.openapi.tool_paths"],
    # The tool paths come from the catalog's rows; `check --deploy` must not need a migrated database.
    # The document's validity is tested instead (tests/catalog/test_openapi.py).
    "ENABLE_DJANGO_DEPLOY_CHECK": False,
}

# --- Celery -----------------------------------------------------------------
# Without Redis, Celery uses a broker kept in files under var/: enough for one
# machine (`make run`), with no server to install.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's default is ./control, in whatever directory the worker starts.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    _broker_dir.mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A publish to a broker that stopped answering fails in seconds instead of hanging the request: a job is
    # still accepted (the reaper queues it again), a health run is marked failed and the operator told.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_timeout": REDIS_SOCKET_TIMEOUT,
                                       "socket_connect_timeout": REDIS_SOCKET_TIMEOUT}
CELERY_BROKER_CONNECTION_TIMEOUT = REDIS_SOCKET_TIMEOUT
# One retry at once, then the caller hears: at most about 2 x (connect + answer) timeouts per publish.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5}
CELERY_TASK_IGNORE_RESULT = True
# Keep database connections across tasks (server402/celery.py closes them as a request would), and open
# new ones only every 2000 tasks.
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {
    "reconcile-abandoned-calls": {"task": "payments.tasks.reconcile_abandoned_calls", "schedule": 300.0},
    "reap-stalled-jobs": {"task": "jobs.tasks.reap_stalled_jobs", "schedule": 30.0},
    "purge-expired-jobs": {"task": "jobs.tasks.purge_expired_jobs", "schedule": 600.0},
    "reap-stalled-health-runs": {"task": "health.tasks.reap_stalled_health_runs", "schedule": 60.0},
    "purge-health-history": {"task": "health.tasks.purge_health_history", "schedule": 3600.0},
    # At each hour's start the window's closed hours change: sum them once, before a page asks.
    "warm-hourly-statistics": {"task": "health.tasks.warm_hourly_statistics", "schedule": crontab(minute="0")},
}
if HEALTH_CHECK_INTERVAL_SECONDS:
    CELERY_BEAT_SCHEDULE["scheduled-health-run"] = {
        "task": "health.tasks.start_scheduled_health_run", "schedule": float(HEALTH_CHECK_INTERVAL_SECONDS)}

# One line per record on stderr. json (the default in live mode) is for log collectors: one object per line with
# time, level, logger, message, request_id and the record's extra fields; plain is for a person at a terminal.
# Every line of a request, or of a Celery task, carries its id (server402/request_context.py).
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOG_FORMAT = env_choice("LOG_FORMAT", "plain" if SANDBOX else "json", ("json", "plain"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "server402.request_context.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": JSON_LOG_FORMATTER,
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    # httpx logs every request at INFO, signature and all; its failures reach our own logs.
    # The x402 SDK logs each signature it makes or checks at INFO.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}, "x402": {"level": "WARNING"},
                # The access line of every request (server402/request_context.py); LOG_ACCESS=false drops them.
                "server402.access": {"level": "INFO" if env_bool("LOG_ACCESS", True) else "WARNING"},
                # Django's own line per 4xx/5xx repeats the access line (a 402 is the normal first answer).
                "django.request": {"level": "ERROR"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
# The worker logs through LOGGING too, in the same format, instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

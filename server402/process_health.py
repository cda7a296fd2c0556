"""Liveness (`/healthz`) and readiness (`/readyz`) of this process, for load balancers and orchestrators.

Answered by a middleware placed before every other one: a probe comes from an
address the host check does not know (a pod's IP) and over plain HTTP, so it
must pass neither ALLOWED_HOSTS nor the HTTPS redirect; and it never touches
the session, CSRF or the request log.

Liveness says the process serves requests, and nothing else: a database outage
must not make an orchestrator restart every web process. Readiness says whether
this process can do its work now: the database, the cache (rate limits) and the
Celery broker (jobs, health runs) each answer within a few seconds.
"""

import time

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
BROKER_TIMEOUT_SECONDS = 2.0


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _cache() -> None:
    cache.get("readiness-probe")


def _broker() -> None:
    from server402.celery import app

    with app.connection_for_write() as broker:
        broker.ensure_connection(max_retries=1, interval_start=0, timeout=BROKER_TIMEOUT_SECONDS)


CHECKS = {"database": _database, "cache": _cache, "broker": _broker}


def readiness() -> tuple[bool, dict]:
    """(ready, {check: {"ok", "ms"[, "error"]}}): each check run once; an error names only its type,
    since a message may carry a host or a password."""
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            results[name] = {"ok": True}
        except Exception as error:  # any failure means not ready, whatever the backend raises
            results[name] = {"ok": False, "error": type(error).__name__}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    if not results["database"]["ok"]:
        # A broken connection stays in the thread; the next request must open a new one.
        connection.close()
    return all(result["ok"] for result in results.values()), results


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "no-store"
    return response


def process_health(get_response):
    def middleware(request):
        if request.path == LIVENESS_PATH:
            return _no_store(JsonResponse({"status": "alive"}))
        if request.path == READINESS_PATH:
            ready, checks = readiness()
            return _no_store(JsonResponse({"status": "ready" if ready else "not ready", "checks": checks},
                                          status=200 if ready else 503))
        return get_response(request)

    return middleware

"""The request id, and one structured access line per request.

Every request gets an id: the caller's `X-Request-Id` when it is a plain token
(a proxy or an agent correlating its own logs), else a new one. It is sent back
in `X-Request-Id`, and every log line written while the request is served, in
any module, carries it (`request_id`, added by RequestIdFilter). Celery tasks
carry their task id the same way (server402/celery.py), so a job's lines can
be found by its task.
"""

import logging
import re
import time
import uuid
from contextvars import ContextVar

current_request_id: ContextVar[str] = ContextVar("request_id", default="-")

# LOG_FORMAT=json: one object per line, for Django and Celery (settings.LOGGING) and gunicorn's own lines
# (gunicorn.conf.py) alike; `request_id` is null on gunicorn's own lines.
JSON_LOG_FORMATTER = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
}

# Anything else (spaces, quotes, newlines, 200 characters) could forge or break log lines: a new id is made.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{8,64}")
access_logger = logging.getLogger("server402.access")


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record, so formatters can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def request_context(get_response):
    def middleware(request):
        presented = request.headers.get("X-Request-Id", "")
        request_id = presented if _ACCEPTED_ID.fullmatch(presented) else uuid.uuid4().hex
        token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = get_response(request)
            response["X-Request-Id"] = request_id
            access_logger.info(
                "%s %s %s", request.method, request.path, response.status_code,
                extra={"method": request.method, "path": request.path, "status": response.status_code,
                       "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                       "client": request.META.get("REMOTE_ADDR", "")},
            )
            return response
        finally:
            current_request_id.reset(token)

    return middleware

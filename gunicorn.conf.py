"""gunicorn's settings for Server402, every value from the environment.

gunicorn reads ./gunicorn.conf.py from the directory it starts in, so `make run`,
the Procfile, the tests' servers and a production unit all serve with these.
A malformed value stops start-up naming the variable (server402/environment.py).
"""

import logging
import os
import socket
import struct

from server402.environment import env_bool, env_choice, env_int, env_str
from server402.request_context import JSON_LOG_FORMATTER

_port = env_int("PORT", 8000, minimum=1, maximum=65535)
# Loopback by default: in production a proxy or load balancer is in front; WEB_BIND=0.0.0.0:8000 to listen wider.
bind = [env_str("WEB_BIND", f"127.0.0.1:{_port}")]

# Processes times threads is how many calls are served at once. A paid call mostly waits on the upstream and
# the database, so threads are cheap; processes use the CPUs (about one per core, see the README).
workers = env_int("WEB_CONCURRENCY", 2, minimum=1, maximum=256)
threads = env_int("WEB_THREADS", 4, minimum=1, maximum=256)
worker_class = "gthread"

# A worker that stops answering the arbiter this long is killed. Threads keep the heartbeat going while a call
# waits on the upstream, so this only catches a worker that is stuck as a whole.
timeout = env_int("WEB_TIMEOUT", 60, minimum=5, maximum=3600)
# On SIGTERM (a deploy, Ctrl-C), calls in flight get this long to finish: a paid call cut midway is given
# back by the reconcile task, but finishing it is better for everyone.
graceful_timeout = env_int("WEB_GRACEFUL_TIMEOUT", 30, minimum=1, maximum=3600)
# Longer than the usual load balancer idle timeout (60 s), so the balancer closes idle connections first and
# never sends a request on one gunicorn is closing.
keepalive = env_int("WEB_KEEPALIVE", 75, minimum=0, maximum=3600)
# Off by default, measured (bench/README.md "Load"): a restarting worker closes its kept-alive connections, the
# clients reconnect at once to the other worker, and one process (one GIL) then serves everything: 77 calls/s
# against 109 with restarts off. Set it where a slow leak is suspected; the jitter keeps workers apart.
max_requests = env_int("WEB_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = max_requests // 10

# Requests are small: a JSON body and a few headers. The largest header a client legitimately sends is
# PAYMENT-SIGNATURE (about 1.5 KB of base64). Anything past these limits is refused by gunicorn with a 400
# (431 for a header too large) before Django reads it.
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190

# A client that stops sending (or reading) mid-request holds one of the worker's threads. The kernel ends
# each blocked read or write after this many seconds (SO_RCVTIMEO/SO_SNDTIMEO, set on the listening socket
# and inherited by every connection it accepts), so a stalled client frees its thread and is disconnected.
# A buffering proxy in front (see the README) bounds a client's total time as well.
CLIENT_TIMEOUT_SECONDS = env_int("WEB_CLIENT_TIMEOUT", 10, minimum=1, maximum=600)

# One access line per request is written by Server402's own middleware (JSON, with the request id); gunicorn's
# would be a second, unstructured copy. WEB_ACCESS_LOG=true turns it on anyway.
accesslog = "-" if env_bool("WEB_ACCESS_LOG", False) else None
errorlog = "-"
loglevel = env_str("LOG_LEVEL", "info").lower()
# gunicorn's own lines (start-up, worker boots, a stalled client) in the app's format: all JSON in live mode.
_mode = env_choice("SERVER402_MODE", "sandbox", ("sandbox", "live"))
if env_choice("LOG_FORMAT", "plain" if _mode == "sandbox" else "json", ("json", "plain")) == "json":
    logconfig_dict = {
        "formatters": {"json": JSON_LOG_FORMATTER},
        "handlers": {name: {"class": "logging.StreamHandler", "formatter": "json", "stream": f"ext://sys.{stream}"}
                     for name, stream in (("console", "stdout"), ("error_console", "stderr"))},
        "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False},
                    # Configured here, gunicorn would write its access lines whatever `accesslog` says.
                    "gunicorn.access": {"level": "INFO" if accesslog else "WARNING", "handlers": ["console"],
                                        "propagate": False}},
    }

# The control socket (gunicornc) defaults to one path per user: two servers on one machine would fight over it,
# and nothing here uses it.
control_socket_disable = True
# The heartbeat file is written every second; memory is faster than a disk where one exists.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def when_ready(server):
    timeout = struct.pack("ll", CLIENT_TIMEOUT_SECONDS, 0)
    for listener in server.LISTENERS:
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)


class StalledClientLine(logging.Filter):
    """gunicorn logs the timed-out read of a stalled client as an unexpected socket error, traceback and all:
    a client that stalls on purpose would multiply the log. It becomes one line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (BlockingIOError, TimeoutError)):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a client stalled for %d s mid-request; its connection was closed", (CLIENT_TIMEOUT_SECONDS,),
                None, None)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def post_worker_init(worker):
    worker.log.error_log.addFilter(StalledClientLine())
    # Load every view before the first request: otherwise the first caller after each start (a deploy, a
    # max_requests restart) waits seconds for the URLconf, and /readyz, answered before it, would say ready
    # while the process is still cold.
    from django.urls import get_resolver

    _ = get_resolver().url_patterns

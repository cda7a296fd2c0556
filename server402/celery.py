import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")

app = Celery("server402")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _database_connections_kept_as_for_a_request(**kwargs):
    """Around each task, close the connections a request would close: unusable ones, or older than CONN_MAX_AGE.

    Celery closes every connection around every task unless CELERY_DB_REUSE_MAX
    is set, so each job paid for a new PostgreSQL connection (the largest cost
    per job in bench/README.md "Jobs"). The setting keeps them; this keeps them
    as Django's request cycle does, CONN_HEALTH_CHECKS included, so a connection
    broken by a database restart is not reused.
    """
    from django.db import close_old_connections

    close_old_connections()


@signals.task_prerun.connect
def _log_lines_carry_the_task_id(task_id=None, **kwargs):
    """A task's log lines carry its id where a request's carry the request id (server402/request_context.py)."""
    from server402.request_context import current_request_id

    current_request_id.set(task_id or "-")


@signals.task_postrun.connect
def _task_id_forgotten(**kwargs):
    from server402.request_context import current_request_id

    current_request_id.set("-")

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from payments.services import tool_calls_reconcile


@shared_task
def reconcile_abandoned_calls() -> int:
    """Every few minutes: give back the calls of processes that died midway (see tool_calls_reconcile)."""
    longest_call = settings.ALIBABA_CLOUD_ATTEMPTS * (
        settings.ALIBABA_CLOUD_CONNECT_TIMEOUT + settings.ALIBABA_CLOUD_READ_TIMEOUT + 1)
    return tool_calls_reconcile(older_than=timedelta(seconds=longest_call + 60))

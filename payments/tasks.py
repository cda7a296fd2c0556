from datetime import timedelta

from celery import shared_task
from django.conf import settings

from catalog.aliyun_client import longest_service_call_seconds
from payments.services import tool_calls_reconcile


@shared_task
def reconcile_abandoned_calls() -> int:
    """Every few minutes: give back the calls of processes that died midway (see tool_calls_reconcile)."""
    # A live call may still be settling its x402 payment after the upstream answered.
    longest_call = longest_service_call_seconds() + settings.X402_FACILITATOR_TIMEOUT
    return tool_calls_reconcile(older_than=timedelta(seconds=longest_call + 60))

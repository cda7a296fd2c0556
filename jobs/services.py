"""Writes of async jobs: accept one, hold it under a lease while a worker runs it, end it, reap, purge.

The call itself is made by payments.pipeline.paid_job_run, the same pipeline
as a synchronous call; this module only keeps the job's row honest. Every
write of a worker is conditional on its attempt, so a worker that lost its
job (its lease ran out and the reaper moved on) can no longer touch it.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from rest_framework import status

from catalog.aliyun_client import longest_call_seconds
from catalog.models import Service
from jobs.models import Job
from payments import credentials
from payments import services as payment_services
from payments.models import ApiKey, ToolCall, X402Authorization

logger = logging.getLogger(__name__)

# A queued job whose message was lost (the broker restarted, publishing failed) is queued again after this.
REQUEUE_AFTER = timedelta(minutes=5)
PURGE_BATCH = 1000

_UNFINISHED = [Job.Status.QUEUED, Job.Status.PROCESSING]
# What GetAsyncJobResult's statuses (and our own submission) make of the job's status.
_UPSTREAM_STATUS = {"SUBMITTED": Job.Status.PROCESSING, "QUEUING": Job.Status.QUEUED,
                    "PROCESSING": Job.Status.PROCESSING}


class JobLeaseLost(Exception):
    """This worker's hold on the job ran out and the reaper gave the job to another attempt (or failed it)."""


def job_lease_seconds() -> float:
    """How long a worker may go without renewing its lease: its longest step, with room to spare.

    A worker renews at every poll of an upstream job and before settling; the
    longest stretch between two renewals is one upstream call with its retries,
    or one wait between polls, followed by a settlement.
    """
    step = longest_call_seconds() + max(settings.ALIBABA_CLOUD_POLL_MAX_SECONDS, settings.X402_FACILITATOR_TIMEOUT)
    return step + 10


@dataclass
class NewJob:
    job: Job
    secret: str


def job_create(*, service: Service, api_key: ApiKey | None, call: ToolCall, arguments: dict,
               x402_payload: dict | None = None, x402_requirements: dict | None = None) -> NewJob:
    """A queued job for a paid call whose record is open; queued on Celery once the transaction commits.

    The job's secret is returned once, here; only its hash is kept.
    """
    secret, secret_hash = credentials.job_secret_generate()
    now = timezone.now()
    job = Job.objects.create(
        id=credentials.job_id_generate(), secret_hash=secret_hash, service=service, api_key=api_key, call=call,
        arguments=arguments, x402_payload=x402_payload, x402_requirements=x402_requirements,
        enqueued_at=now, created_at=now,
    )
    transaction.on_commit(lambda: _enqueue(job.pk))
    return NewJob(job, secret)


def _enqueue(job_id: str) -> None:
    from jobs.tasks import run_job

    try:
        run_job.delay(job_id)
    except Exception as error:  # the broker is down: the job is accepted all the same
        logger.warning("job %s could not be queued (%s: %s); the reaper queues it again in %s", job_id,
                       error.__class__.__name__, error, REQUEUE_AFTER)


def job_claim(*, job_id: str) -> Job | None:
    """Take a queued job for this worker, counting the attempt and starting its lease.

    None when it is not this worker's to run: finished, held by another worker,
    or gone (a message delivered twice finds it taken).
    """
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=Job.Status.QUEUED, lease_expires_at__isnull=True).update(
        status=Job.Status.PROCESSING, attempts=F("attempts") + 1,
        lease_expires_at=now + timedelta(seconds=job_lease_seconds()),
    )
    if not claimed:
        return None
    job = Job.objects.select_related("service", "call", "call__payment", "api_key").get(pk=job_id)
    if job.started_at is None:
        job.started_at = now
        Job.objects.filter(pk=job_id).update(started_at=now)
    return job


def _update_held(job: Job, fields: dict) -> None:
    """Write `fields` only while this attempt still holds the job under a lease; JobLeaseLost otherwise."""
    held = Job.objects.filter(pk=job.pk, attempts=job.attempts, status__in=_UNFINISHED,
                              lease_expires_at__isnull=False).update(**fields)
    if not held:
        raise JobLeaseLost(job.pk)


def job_lease_renew(*, job: Job, upstream_job_id: str = "", upstream_status: str = "") -> None:
    """Renew this worker's hold on the job and record the upstream job's progress; JobLeaseLost if it is gone."""
    fields = {"lease_expires_at": timezone.now() + timedelta(seconds=job_lease_seconds())}
    if upstream_job_id:
        fields["upstream_job_id"] = upstream_job_id[:100]
    if upstream_status:
        fields["upstream_status"] = upstream_status[:30]
        fields["status"] = _UPSTREAM_STATUS.get(upstream_status, Job.Status.PROCESSING)
    _update_held(job, fields)
    for name, value in fields.items():
        setattr(job, name, value)


# What a failed job keeps of a 402 body: why the payment failed, not how to pay again (kilobytes per row).
_PAYMENT_REQUIRED_KEPT = ("error", "invalidReason", "paymentId", "settlement")


def _error_body(http_status: int, body: dict) -> dict:
    error = body
    if http_status == status.HTTP_402_PAYMENT_REQUIRED:
        error = {key: value for key, value in body.items() if key in _PAYMENT_REQUIRED_KEPT}
    error.setdefault("charged", False)
    return {**error, "httpStatus": http_status}


def job_finish(*, job: Job, http_status: int, body: dict, receipt: str = "") -> Job:
    """End the job with its call's answer: the result (200), or the error any other status is.

    Written only by the attempt that holds the job; JobLeaseLost otherwise.
    """
    now = timezone.now()
    succeeded = http_status == status.HTTP_200_OK
    fields = {
        "status": Job.Status.SUCCEEDED if succeeded else Job.Status.FAILED,
        "http_status": http_status,
        "result": body if succeeded else None,
        "error": None if succeeded else _error_body(http_status, body),
        "charged": succeeded or body.get("charged") is True,
        "receipt": receipt,
        "finished_at": now,
        "expires_at": now + timedelta(seconds=settings.JOB_RESULT_TTL_SECONDS),
        "lease_expires_at": None,
        "x402_payload": None,
        "x402_requirements": None,
    }
    _update_held(job, fields)
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def job_fail(*, job: Job, reason: str, http_status: int, outcome: str = ToolCall.Outcome.ABANDONED,
             lease_expired_by=None) -> Job | None:
    """Fail a job that will not deliver (its worker died too often, it ran out of time): no result, no charge.

    Its call is closed and given back, an unsettled x402 authorization is
    released. If the payment did settle (before a worker died) the caller gets
    a token worth the call instead, as a synchronous call does. None when the
    job had ended or moved on meanwhile. The reaper passes `lease_expired_by`:
    a worker that renewed its lease since the reaper looked keeps the job.
    """
    now = timezone.now()
    with transaction.atomic():
        held = Job.objects.select_for_update().filter(pk=job.pk, attempts=job.attempts, status__in=_UNFINISHED)
        if lease_expired_by is not None:
            held = held.filter(Q(lease_expires_at__lt=lease_expired_by) | Q(lease_expires_at__isnull=True))
        locked = held.first()
        if locked is None:
            return None
        call = locked.call
        error = {"error": f"{reason}; nothing was charged", "charged": False}
        if call.outcome not in (ToolCall.Outcome.IN_PROGRESS, ToolCall.Outcome.SUCCEEDED):
            # An earlier attempt ended the call (and gave it back); its error says more.
            error["error"] = f"{reason}: {call.error}; nothing was charged" if call.error else error["error"]
        payment_services.tool_call_abandon(call=call, outcome=outcome, http_status=http_status, error=reason)
        ledger = X402Authorization.objects.filter(payment_id=call.payment_id).order_by("-created_at").first() \
            if call.payment_method == ToolCall.PaymentMethod.X402 else None
        if ledger is not None and ledger.status == X402Authorization.Status.RESERVED:
            if locked.settling_started_at is not None:
                # Cut off while settling: whether the money moved cannot be known here.
                X402Authorization.objects.filter(pk=ledger.pk, status=X402Authorization.Status.RESERVED).update(
                    status=X402Authorization.Status.UNKNOWN, error="the job's worker stopped while settling")
                error.update(settlement="unknown",
                             error=f"{reason}; it stopped while settling the x402 payment, whose outcome is unknown: "
                                   f"the operator reconciles payment {call.payment_id}")
            else:
                payment_services.x402_authorization_release(ledger=ledger)
        elif ledger is not None and ledger.status == X402Authorization.Status.SETTLED:
            error.update(error=reason, charged=True, paymentId=call.payment_id,
                         retryToken=credentials.payment_token(call.payment_id),
                         retry="the payment settled before the job failed: call again with X-Payment-Token set to "
                               "retryToken (one call)")
        elif ledger is not None and ledger.status == X402Authorization.Status.UNKNOWN:
            error.update(settlement="unknown", paymentId=call.payment_id,
                         error=f"{reason}; whether its x402 payment settled is unknown: the operator reconciles "
                               f"payment {call.payment_id}")
        fields = {"status": Job.Status.FAILED, "http_status": http_status,
                  "error": {**error, "httpStatus": http_status}, "charged": error["charged"], "finished_at": now,
                  "expires_at": now + timedelta(seconds=settings.JOB_RESULT_TTL_SECONDS), "lease_expires_at": None,
                  "x402_payload": None, "x402_requirements": None}
        Job.objects.filter(pk=locked.pk).update(**fields)
    for name, value in fields.items():
        setattr(job, name, value)
    return job


def _checkpoint(job: Job, moment_field: str) -> None:
    """Renew the lease and note, once, the moment a step with consequences starts; JobLeaseLost if not ours."""
    now = timezone.now()
    fields = {"lease_expires_at": now + timedelta(seconds=job_lease_seconds()),
              moment_field: Coalesce(F(moment_field), Value(now))}
    _update_held(job, fields)
    job.lease_expires_at = fields["lease_expires_at"]
    setattr(job, moment_field, getattr(job, moment_field) or now)


def job_settling(*, job: Job) -> None:
    """Note that settlement starts: a worker dying from here leaves its outcome unknown (see job_fail)."""
    _checkpoint(job, "settling_started_at")


def job_upstream_sending(*, job: Job) -> None:
    """Note that the upstream request goes out: from here it may have run, even if the worker dies."""
    _checkpoint(job, "upstream_sent_at")


def job_fence(*, job: Job) -> None:
    """Inside the transaction that ends the job's call (its record, its payment): check this attempt still
    holds the job and renew its lease, so the reaper leaves the job alone until job_finish.

    The UPDATE also locks the row until that transaction ends. JobLeaseLost
    when the job was given to another attempt or failed meanwhile: then this
    worker must not write the call's end, give its payment back, or release it.
    """
    job_lease_renew(job=job)


def job_deadline(job: Job):
    return job.created_at + timedelta(seconds=settings.JOB_TIMEOUT_SECONDS)


def jobs_reap(*, now=None) -> dict[str, int]:
    """Start again the jobs whose worker died (its lease ran out), or fail them after JOB_MAX_ATTEMPTS or
    past their deadline; queue again the queued jobs no worker took (their message was lost)."""
    now = now or timezone.now()
    counts = {"requeued": 0, "failed": 0}
    stale = Job.objects.filter(status__in=_UNFINISHED, lease_expires_at__lt=now)
    for job in stale.select_related("call").order_by("lease_expires_at")[:PURGE_BATCH]:
        if job.attempts >= settings.JOB_MAX_ATTEMPTS or now >= job_deadline(job):
            tried = f"{job.attempts} time{'s' if job.attempts != 1 else ''}"
            if job_fail(job=job, http_status=status.HTTP_503_SERVICE_UNAVAILABLE, lease_expired_by=now,
                        reason=f"the worker making this call stopped before it finished ({tried})"):
                counts["failed"] += 1
            continue
        requeued = Job.objects.filter(pk=job.pk, attempts=job.attempts, lease_expires_at=job.lease_expires_at).update(
            status=Job.Status.QUEUED, lease_expires_at=None, enqueued_at=now)
        if requeued:
            counts["requeued"] += 1
            transaction.on_commit(lambda job_id=job.pk: _enqueue(job_id))
    waiting = Job.objects.filter(status=Job.Status.QUEUED, lease_expires_at__isnull=True,
                                 enqueued_at__lt=now - REQUEUE_AFTER)
    for job in waiting.select_related("call").order_by("enqueued_at")[:PURGE_BATCH]:
        if now >= job_deadline(job):
            if job_fail(job=job, http_status=status.HTTP_504_GATEWAY_TIMEOUT, outcome=ToolCall.Outcome.TIMEOUT,
                        lease_expired_by=now,
                        reason=f"no worker took this job within {settings.JOB_TIMEOUT_SECONDS} s"):
                counts["failed"] += 1
        elif Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED, lease_expires_at__isnull=True,
                                enqueued_at=job.enqueued_at).update(enqueued_at=now):
            counts["requeued"] += 1
            transaction.on_commit(lambda job_id=job.pk: _enqueue(job_id))
    return counts


def jobs_purge(*, now=None) -> int:
    """Delete the finished jobs past `expires_at`, results and arguments with them; their calls stay."""
    now = now or timezone.now()
    purged = 0
    while True:
        batch = list(Job.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[:PURGE_BATCH])
        if not batch:
            return purged
        purged += Job.objects.filter(pk__in=batch).delete()[0]


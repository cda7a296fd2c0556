"""Reads of async jobs: which jobs a caller may see, and how a job is reported."""

import hmac
import re

from django.conf import settings
from django.utils import timezone

from catalog.documents import absolute_url
from jobs.models import Job
from payments import credentials
from payments.models import ApiKey

# What credentials.job_id_generate() makes.
JOB_ID = re.compile(r"job_[0-9a-f]{32}")
NOT_FOUND = "not_found"


def _iso(moment) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def job_status_url(job_id: str) -> str:
    return absolute_url(f"/api/jobs/{job_id}")


def jobs_visible(*, job_ids: list[str], api_key: ApiKey | None, secrets: list[str]) -> dict[str, Job]:
    """{id: job} for the ids whose job exists, has not expired, and is the caller's.

    A job is the caller's when it was submitted with `api_key`, or when one of
    `secrets` is its own secret. Anything else is left out, exactly as a job
    that never existed: a caller learns nothing about other callers' jobs.
    """
    hashes = {credentials.job_secret_hash(secret) for secret in secrets}
    now = timezone.now()
    visible = {}
    for job in Job.objects.filter(pk__in=job_ids).select_related("service"):
        if job.expires_at is not None and job.expires_at <= now:
            continue
        owned = api_key is not None and job.api_key_id == api_key.pk
        # Compared in constant time, every hash against the job's.
        by_secret = any(hmac.compare_digest(job.secret_hash, candidate) for candidate in hashes)
        if owned or by_secret:
            visible[job.pk] = job
    return visible


def job_record(job: Job) -> dict:
    """The job as its owner reads it: status, timestamps, and the result or the error."""
    record = {
        "jobId": job.pk,
        "status": job.status,
        "serviceId": job.service_id,
        "statusUrl": job_status_url(job.pk),
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "expiresAt": _iso(job.expires_at),
        "attempts": job.attempts,
        "charged": job.charged,
        "result": job.result,
        "error": job.error,
    }
    if job.upstream_job_id:
        record["upstream"] = {"jobId": job.upstream_job_id, "status": job.upstream_status}
    if job.receipt:
        record["paymentResponse"] = job.receipt
    if not job.is_finished:
        record["retryAfterSeconds"] = settings.JOB_RETRY_AFTER_SECONDS
    return record


def job_not_found(job_id: str) -> dict:
    """What a caller reads for a job it may not see, whether it exists or not: the same for every reason."""
    return {"jobId": job_id, "status": NOT_FOUND,
            "error": {"error": "no such job: it never existed, its result expired, or it is not yours",
                      "httpStatus": 404}}

"""Reads of async jobs: which jobs a caller may see, and how a job is reported."""

import hmac
import json
import re
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from catalog.documents import absolute_url
from catalog.models import Service
from jobs.models import Job
from payments import credentials
from payments.models import ApiKey
from payments.selectors import Cursor, Page, keyset_page

# What credentials.job_id_generate() makes.
JOB_ID = re.compile(r"job_[0-9a-f]{32}")
NOT_FOUND = "not_found"


def malformed_job_id(job_id: str) -> str:
    """The sentence for an id that cannot be a job's, as REST and MCP both say it."""
    return f"{job_id[:80]!r} is not a job id: job ids are job_ followed by 32 hexadecimal digits"


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


# Dashboard reads. The jobs list pages by keyset on (created_at, id), newest first, as the payments
# ledger does: no COUNT(*), no OFFSET. Rows never carry the job's secret hash or its x402 payload.

# Columns a list row never shows: the largest (results, arguments) and the ones that must not leave the row.
_NOT_LISTED = ("secret_hash", "arguments", "result", "x402_payload", "x402_requirements", "receipt")
# Keys of a job's answer that hold a credential: a retry token is its payment's token, and pays for a call
# whoever reads it (the payment's own page never shows it either).
_CREDENTIAL_KEYS = ("retryToken", "jobSecret")
HIDDEN = "(hidden: a payment credential)"


def jobs_dashboard_page(*, service_id: str | None = None, api_key_ids: list[int] | None = None,
                        status: str | None = None, before: Cursor | None = None, size: int = 50) -> Page:
    """Jobs newest first under any of the filters, with their API key, in one query whatever the page size.

    The service and key filters are served by the (service, created_at) and
    (api_key, created_at) indexes, the rest by (created_at, id).
    """
    queryset = Job.objects.select_related("api_key").defer(*_NOT_LISTED)
    if service_id:
        queryset = queryset.filter(service_id=service_id)
    if api_key_ids is not None:
        queryset = queryset.filter(api_key_id__in=api_key_ids)
    if status:
        queryset = queryset.filter(status=status)
    return keyset_page(queryset, before, size)


@dataclass
class RecentJobs:
    """A service's or a key's latest jobs and how many of its jobs are in each status."""

    rows: list
    counts: list  # (status, label, count) for every status, in Job.Status's order
    total: int
    filter_name: str  # the jobs page's query parameter that lists all of them
    filter_value: str


def jobs_recent(*, service: Service | None = None, api_key: ApiKey | None = None, size: int = 10) -> RecentJobs:
    """The latest `size` jobs of one service or one API key, and its jobs counted by status (two queries).

    Counts cover the jobs still stored: finished ones are purged JOB_RESULT_TTL_SECONDS after they end.
    """
    if (service is None) == (api_key is None):
        raise ValueError("jobs_recent takes a service or an API key")
    if service is not None:
        jobs, filter_name, filter_value = Job.objects.filter(service=service), "service", service.pk
    else:
        jobs, filter_name, filter_value = Job.objects.filter(api_key=api_key), "key", api_key.client_id
    rows = list(jobs.select_related("api_key").defer(*_NOT_LISTED).order_by("-created_at", "-pk")[:size])
    by_status = dict(jobs.order_by().values_list("status").annotate(count=Count("pk")))
    counts = [(value, label, by_status.get(value, 0)) for value, label in Job.Status.choices]
    return RecentJobs(rows, counts, sum(by_status.values()), filter_name, filter_value)


def _credentials_hidden(value):
    """`value` with every credential-holding key's value replaced, at any depth."""
    if isinstance(value, dict):
        return {key: HIDDEN if key in _CREDENTIAL_KEYS and item else _credentials_hidden(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_credentials_hidden(item) for item in value]
    return value


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@dataclass
class JobDetail:
    job: Job
    arguments: str  # JSON text, for the template to escape
    result: str | None
    error: str | None


def job_for_dashboard(job_id: str) -> JobDetail | None:
    """One job with its service, API key and call (one query) and its JSON as text; None if there is none.

    Its secret hash and x402 payload are not even read; a payment credential in
    its error (the retry token of a call that settled and then failed) is hidden.
    """
    job = (Job.objects.select_related("service", "api_key", "call")
           .defer("secret_hash", "x402_payload", "x402_requirements").filter(pk=job_id).first())
    if job is None:
        return None
    return JobDetail(
        job=job,
        arguments=_pretty(job.arguments),
        result=_pretty(_credentials_hidden(job.result)) if job.result is not None else None,
        error=_pretty(_credentials_hidden(job.error)) if job.error is not None else None,
    )

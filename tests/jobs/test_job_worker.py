"""Async jobs through real Celery workers: subprocesses on Redis, sharing the test's PostgreSQL database.

The other job tests call paid_job_run in the test process; these prove the
deployed path: a job submitted over HTTP queued on commit and made by a worker
process, and a worker SIGKILLed mid-job leaving a job that the reaper starts
again (a second worker finishes it, charged once) or fails uncharged, never
one left processing forever.

A worker computes its job's lease from its own settings: with one attempt
per call and short timeouts it is about 14 s (job_lease_seconds adds 10 s to
the longest step). One test waits that out for real; the others reap as of a
moment just past the lease (jobs_reap's `now`), after checking that the live
lease is left alone, so the module stays well under a minute.
"""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from catalog.emulator import job_key
from jobs.models import Job
from jobs.services import jobs_reap
from jobs.tasks import run_job
from payments.models import Payment, ToolCall
from payments.pipeline import paid_job_run
from tests.celery_workers import Worker, wait_for, why_not_runnable

_not_runnable = why_not_runnable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_not_runnable), reason=_not_runnable)]

IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"
ENVELOPE = {"code", "content", "data", "message", "requestId"}
# A worker that makes one attempt per upstream call and polls an upstream job every 0.1 to 0.2 s.
QUICK = {"ALIBABA_CLOUD_ATTEMPTS": "1", "ALIBABA_CLOUD_CONNECT_TIMEOUT": "0.5", "ALIBABA_CLOUD_READ_TIMEOUT": "8",
         "ALIBABA_CLOUD_POLL_SECONDS": "0.1", "ALIBABA_CLOUD_POLL_MAX_SECONDS": "0.2",
         "X402_FACILITATOR_TIMEOUT": "0.5"}
# Its lease: 1 x (0.5 + 2 + 1 s of back-off cap) + max(0.2, 0.5) + 10 = 14 s, renewed at every poll.
SHORT_LEASE = {**QUICK, "ALIBABA_CLOUD_READ_TIMEOUT": "2"}
FINISHED = (Job.Status.SUCCEEDED, Job.Status.FAILED)


@pytest.fixture
def buyer(celery_workers, make_key, paid_token):
    """An API key and a paid one-call token for a service: buy(service_id) -> (secret, payment, token)."""

    def buy(service_id):
        key, secret = make_key()
        payment, token = paid_token(service_id, key)
        return secret, payment, token

    return buy


def _submit(api, service_id: str, image_url: str, *, secret: str, token: str) -> str:
    response = api.post(f"/api/tools/{service_id}", {"ImageURL": image_url}, format="json",
                        HTTP_X_API_KEY=secret, HTTP_X_PAYMENT_TOKEN=token, HTTP_PREFER="respond-async")
    assert response.status_code == 202, response.content
    assert response["Preference-Applied"] == "respond-async"
    body = response.json()
    assert body["status"] == Job.Status.QUEUED and body["jobSecret"]
    return body["jobId"]


def _wait_for_job(job_id: str, done, what: str, *, worker: Worker | None, timeout: float = 60) -> Job:
    # The timeout only bounds a test that fails: a worker boots in 1-2 s, much more on a loaded machine.
    return wait_for(lambda: Job.objects.get(pk=job_id), done, what=what, timeout=timeout, worker=worker)


def _reap_after_the_lease(job: Job) -> dict[str, int]:
    """The reaper's pass once the dead worker's lease has run out; first, a pass now leaves the live lease be."""
    assert job.lease_expires_at > timezone.now()
    assert jobs_reap() == {"requeued": 0, "failed": 0}
    assert Job.objects.get(pk=job.pk).status == Job.Status.PROCESSING
    return jobs_reap(now=job.lease_expires_at + timedelta(seconds=1))


def _charged_once(payment: Payment, job: Job) -> None:
    payment.refresh_from_db()
    assert payment.used_calls == 1
    call = ToolCall.objects.get(payment=payment)
    assert call.pk == job.call_id
    assert call.outcome == ToolCall.Outcome.SUCCEEDED and call.http_status == 200 and call.amount_cents > 0


def test_a_real_worker_completes_a_job_submitted_over_http(api, celery_workers, buyer):
    worker = celery_workers.start(**QUICK)
    secret, payment, token = buyer("celebrity-recognition")

    job_id = _submit(api, "celebrity-recognition", IMAGE, secret=secret, token=token)

    def read():
        response = api.get(f"/api/jobs/{job_id}", HTTP_X_API_KEY=secret)
        assert response.status_code == 200, response.content
        return response.json()

    record = wait_for(read, lambda r: r["status"] in FINISHED, what="finished job", timeout=60, worker=worker,
                      interval=0.2)
    assert record["status"] == "succeeded", record
    assert record["attempts"] == 1 and record["charged"] is True and record["error"] is None
    assert set(record["result"]) == ENVELOPE
    assert (record["result"]["code"], record["result"]["message"]) == ("200", "success")
    assert record["result"]["data"]["Action"] == "DetectCelebrity"
    assert record["result"]["data"]["Result"]
    assert record["startedAt"] and record["finishedAt"] and record["expiresAt"]
    _charged_once(payment, Job.objects.get(pk=job_id))


def test_a_job_whose_worker_is_killed_mid_call_is_finished_by_another_worker_and_charged_once(
        api, celery_workers, buyer):
    secret, payment, token = buyer("celebrity-recognition")
    first = celery_workers.start(**QUICK)
    # Each upstream call takes 3 s: the first worker is killed in the middle of its own.
    job_id = _submit(api, "celebrity-recognition", "http://sandbox.invalid/slow/3000", secret=secret, token=token)
    taken = _wait_for_job(job_id, lambda j: j.status != Job.Status.QUEUED, "job taken by the first worker",
                          worker=first)
    first.kill()
    assert taken.status == Job.Status.PROCESSING, (taken.status, taken.error)

    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts, job.finished_at) == (Job.Status.PROCESSING, 1, None)
    assert job.lease_expires_at is not None
    assert _reap_after_the_lease(job) == {"requeued": 1, "failed": 0}
    job.refresh_from_db()
    assert (job.status, job.lease_expires_at, job.attempts) == (Job.Status.QUEUED, None, 1)

    second = celery_workers.start(**QUICK)
    job = _wait_for_job(job_id, lambda j: j.status in FINISHED, "job finished by the second worker", worker=second)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 2 and job.charged and job.http_status == 200
    assert set(job.result) == ENVELOPE and job.result["data"]["Action"] == "DetectCelebrity"
    _charged_once(payment, job)


def test_a_killed_worker_s_upstream_job_is_polled_to_its_end_by_the_next_worker_not_submitted_again(
        api, celery_workers, buyer):
    secret, payment, token = buyer("ad-image-tagging")
    # The first worker submits the upstream job, then waits 30 s before its first poll: it dies waiting.
    first = celery_workers.start(**QUICK | {"ALIBABA_CLOUD_POLL_SECONDS": "30", "ALIBABA_CLOUD_POLL_MAX_SECONDS": "30"})
    job_id = _submit(api, "ad-image-tagging", "https://example.com/ad.jpg", secret=secret, token=token)
    job = _wait_for_job(job_id, lambda j: j.upstream_job_id != "" or j.status in FINISHED,
                        "upstream job submitted by the first worker", worker=first)
    first.kill()
    assert job.status == Job.Status.PROCESSING, (job.status, job.error)

    job.refresh_from_db()
    submitted = job.upstream_job_id
    assert (job.status, job.upstream_status, job.attempts) == (Job.Status.PROCESSING, "SUBMITTED", 1)
    polls = f"{job_key(submitted)}:polls"
    assert cache.get(polls) is None
    assert _reap_after_the_lease(job) == {"requeued": 1, "failed": 0}

    second = celery_workers.start(**QUICK)
    job = _wait_for_job(job_id, lambda j: j.status in FINISHED, "job finished by the second worker", worker=second)

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.attempts == 2 and job.charged
    # The same upstream job, polled QUEUING, PROCESSING, PROCESS_SUCCESS by the second worker alone.
    assert job.upstream_job_id == submitted and job.upstream_status == "PROCESS_SUCCESS"
    assert cache.get(polls) == 3
    assert job.result["requestId"] == submitted and job.result["data"]["Action"] == "TaggingAdImage"
    assert job.result["data"]["Result"]
    _charged_once(payment, job)


def test_a_job_whose_worker_dies_on_its_last_attempt_is_failed_uncharged_by_the_reaper(api, celery_workers, buyer):
    secret, payment, token = buyer("ad-image-tagging")
    worker = celery_workers.start(**SHORT_LEASE)
    # An upstream job that never ends: the worker polls it, renewing its lease, until it is killed.
    job_id = _submit(api, "ad-image-tagging", "http://sandbox.invalid/job/stuck", secret=secret, token=token)
    polled = _wait_for_job(job_id, lambda j: j.upstream_status == "PROCESSING" or j.status in FINISHED,
                           "upstream job polled", worker=worker)
    worker.kill()
    assert polled.status == Job.Status.PROCESSING, (polled.status, polled.error)
    payment.refresh_from_db()
    assert payment.used_calls == 1

    job = Job.objects.get(pk=job_id)
    assert (job.status, job.attempts) == (Job.Status.PROCESSING, 1)
    assert job.lease_expires_at - timezone.now() <= timedelta(seconds=14)
    assert jobs_reap() == {"requeued": 0, "failed": 0}
    # Nothing renews the lease any more: it runs out for real.
    wait_for(timezone.now, lambda now: now > job.lease_expires_at, what="end of the dead worker's lease",
             timeout=30, interval=0.2)
    with override_settings(JOB_MAX_ATTEMPTS=1):
        assert jobs_reap() == {"requeued": 0, "failed": 1}

    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.finished_at and job.expires_at
    assert job.lease_expires_at is None and job.result is None and job.charged is False
    assert job.http_status == 503
    assert "the worker making this call stopped" in job.error["error"]
    assert "nothing was charged" in job.error["error"]
    assert job.error["charged"] is False and job.error["httpStatus"] == 503
    payment.refresh_from_db()
    assert payment.used_calls == 0
    call = ToolCall.objects.get(pk=job.call_id)
    assert call.outcome == ToolCall.Outcome.ABANDONED and call.amount_cents == 0 and call.finished_at
    record = api.get(f"/api/jobs/{job_id}", HTTP_X_API_KEY=secret).json()
    assert record["status"] == "failed" and record["error"]["error"] == job.error["error"]

    # The task's message delivered again (or twice) finds the job ended, and changes nothing.
    assert paid_job_run(job_id=job_id) is None
    assert run_job(job_id) is None
    again = Job.objects.get(pk=job_id)
    assert (again.status, again.attempts, again.error, again.finished_at, again.charged) == (
        job.status, job.attempts, job.error, job.finished_at, job.charged)
    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert ToolCall.objects.get(pk=job.call_id).outcome == ToolCall.Outcome.ABANDONED
    with override_settings(JOB_MAX_ATTEMPTS=1):
        assert jobs_reap() == {"requeued": 0, "failed": 0}

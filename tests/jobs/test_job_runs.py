"""The worker's side of a job: upstream-async actions, leases, retries after a worker died, the reaper, races.

A dead worker is simulated here by the state it leaves behind (a lease in
the past); tests/jobs/test_job_worker.py kills a real Celery worker.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog import aliyun_client
from catalog.models import PricingPolicy
from jobs import services as job_services
from jobs.models import Job
from payments.credentials import job_secret_hash
from payments.models import ToolCall, X402Authorization
from payments.pipeline import paid_call_run, paid_job_run
from payments.services import tool_calls_reconcile
from tests.conftest import run_concurrently

pytestmark = pytest.mark.django_db

IMAGE = "https://example.com/ad.jpg"


@pytest.fixture
def fast_polls(settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS = 0.01
    settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.02


@pytest.fixture
def buyer(make_key, paid_token):
    def buy(service_id="celebrity-recognition", max_calls=1):
        key, secret = make_key()
        payment, token = paid_token(service_id, key, max_calls=max_calls)
        return key, secret, payment, token

    return buy


def _submit(service_id, secret, token, image=IMAGE) -> Job:
    answer = paid_call_run(reference=service_id, arguments={"ImageURL": image}, api_key=secret, payment_token=token,
                           respond_async=True)
    assert answer.status == 202, answer.body
    return Job.objects.select_related("call", "call__payment").get(pk=answer.body["jobId"])


def _x402_submit(x402_payer, service_id="celebrity-recognition", image=IMAGE) -> Job:
    unpaid = paid_call_run(reference=service_id, arguments={"ImageURL": image})
    payload = x402_payer.payload(unpaid.headers["PAYMENT-REQUIRED"])
    answer = paid_call_run(reference=service_id, arguments={"ImageURL": image}, payment_payload=payload,
                           respond_async=True)
    assert answer.status == 202, answer.body
    return Job.objects.get(pk=answer.body["jobId"])


def _died_midway(job: Job, **fields) -> Job:
    """The row a worker leaves when it is killed after claiming the job: processing, its lease run out."""
    Job.objects.filter(pk=job.pk).update(status=Job.Status.PROCESSING, attempts=job.attempts + 1,
                                         lease_expires_at=timezone.now() - timedelta(seconds=1),
                                         started_at=timezone.now(), **fields)
    job.refresh_from_db()
    return job


def _settle_after():
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)


# --- Upstream-async actions ----------------------------------------------------------

def test_a_job_of_an_async_action_polls_until_the_result_and_parses_it(upstream_emulator, buyer, fast_polls):
    _, secret, payment, token = buyer("ad-image-tagging")
    job = _submit("ad-image-tagging", secret, token)

    job = paid_job_run(job_id=job.pk)

    assert job.status == "succeeded" and job.upstream_status == "PROCESS_SUCCESS"
    # The emulator's documented result, parsed from GetAsyncJobResult's JSON string.
    assert job.result["data"] == {"Action": "TaggingAdImage", "Result": {"TagInfo": {"test": "test", "test2": 1}}}
    assert job.result["requestId"] == job.upstream_job_id == job.call.upstream_request_id


def test_a_synchronous_call_of_an_async_action_returns_the_final_result(api, upstream_emulator, buyer, fast_polls):
    _, secret, payment, token = buyer("ad-image-tagging")

    response = api.post("/api/tools/ad-image-tagging", {"ImageURL": IMAGE}, format="json",
                        HTTP_X_PAYMENT_TOKEN=token, HTTP_X_API_KEY=secret)

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["Result"] == {"TagInfo": {"test": "test", "test2": 1}}
    assert not Job.objects.exists()


@pytest.mark.parametrize(("end", "http_status", "code", "outcome"), [
    ("PROCESS_FAILED", 502, "PROCESS_FAILED", "upstream_error"),
    ("PROCESS_FAILED/InvalidImage.Download", 400, "InvalidImage.Download", "client_error"),
    ("TIMEOUT_FAILED", 504, "TIMEOUT_FAILED", "timeout"),
    ("LIMIT_RETRY_FAILED", 502, "LIMIT_RETRY_FAILED", "upstream_error"),
])
def test_an_upstream_job_that_fails_fails_the_job_uncharged(upstream_emulator, buyer, fast_polls, end, http_status,
                                                             code, outcome):
    _, secret, payment, token = buyer("ad-image-tagging")
    job = _submit("ad-image-tagging", secret, token, image=f"https://sandbox.invalid/job/{end}")

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status, job.charged, job.upstream_status) == (
        "failed", http_status, False, end.split("/")[0]), job.error
    assert job.error["code"] == code and job.error["charged"] is False
    assert f"ended in {end.split('/')[0]}" in job.error["error"] or job.error["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert ToolCall.objects.get(pk=job.call_id).outcome == outcome


def test_an_upstream_job_still_running_at_the_deadline_fails_the_job_uncharged(
        upstream_emulator, buyer, fast_polls, settings):
    settings.JOB_TIMEOUT_SECONDS = 1
    _, secret, payment, token = buyer("ad-image-tagging")
    job = _submit("ad-image-tagging", secret, token, image="https://sandbox.invalid/job/stuck")

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status, job.upstream_status) == ("failed", 504, "PROCESSING")
    assert job.error["code"] == "AsyncJobTimeout" and "did not finish within 1 s" in job.error["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_a_synchronous_call_waits_for_an_async_action_only_so_long(api, upstream_emulator, buyer, fast_polls,
                                                                   settings):
    settings.ALIBABA_CLOUD_ASYNC_WAIT_SECONDS = 0.3
    _, secret, payment, token = buyer("ad-image-tagging")

    response = api.post("/api/tools/ad-image-tagging", {"ImageURL": "https://sandbox.invalid/job/stuck"},
                        format="json", HTTP_X_PAYMENT_TOKEN=token, HTTP_X_API_KEY=secret)

    assert response.status_code == 504 and response.json()["charged"] is False
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_the_job_shows_the_upstream_queue_while_it_waits(upstream_emulator, buyer, fast_polls, monkeypatch):
    _, secret, _, token = buyer("ad-image-tagging")
    job = _submit("ad-image-tagging", secret, token)
    seen = []
    renew = job_services.job_lease_renew

    def spy(*, job, upstream_job_id="", upstream_status=""):
        renew(job=job, upstream_job_id=upstream_job_id, upstream_status=upstream_status)
        if upstream_status:
            seen.append((upstream_status, Job.objects.get(pk=job.pk).status))

    monkeypatch.setattr(job_services, "job_lease_renew", spy)

    paid_job_run(job_id=job.pk)

    assert seen == [("SUBMITTED", "processing"), ("QUEUING", "queued"), ("PROCESSING", "processing"),
                    ("PROCESS_SUCCESS", "processing")]


# --- Delivered once -------------------------------------------------------------------

def test_a_message_delivered_twice_runs_the_call_once(upstream_emulator, buyer, monkeypatch):
    _, secret, _, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    calls = []
    real = aliyun_client.call_service
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))

    first, second = paid_job_run(job_id=job.pk), paid_job_run(job_id=job.pk)

    assert first.status == "succeeded" and second is None and len(calls) == 1


def test_workers_racing_for_one_job_run_it_once(postgresql_only, committed_db, upstream_emulator, make_key,
                                                paid_token):
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key)
    job = _submit("celebrity-recognition", secret, token)

    ran = run_concurrently(lambda _: paid_job_run(job_id=job.pk), 8)

    assert sum(result is not None for result in ran) == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert ToolCall.objects.filter(pk=job.call_id, outcome="succeeded").count() == 1


def test_an_unknown_job_id_is_nothing_to_run():
    assert paid_job_run(job_id="job_" + "0" * 32) is None


# --- A worker that died ------------------------------------------------------------------

def test_the_reaper_starts_again_a_job_whose_worker_died(upstream_emulator, buyer, django_capture_on_commit_callbacks):
    _, secret, payment, token = buyer()
    job = _died_midway(_submit("celebrity-recognition", secret, token))

    with django_capture_on_commit_callbacks() as queued:
        counts = job_services.jobs_reap()

    assert counts == {"requeued": 1, "failed": 0} and len(queued) == 1
    job.refresh_from_db()
    assert (job.status, job.lease_expires_at, job.attempts) == ("queued", None, 1)
    job = paid_job_run(job_id=job.pk)
    assert (job.status, job.attempts) == ("succeeded", 2)
    payment.refresh_from_db()
    assert payment.used_calls == 1


def test_a_live_lease_is_left_alone(upstream_emulator, buyer):
    _, secret, _, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    Job.objects.filter(pk=job.pk).update(status="processing", attempts=1,
                                         lease_expires_at=timezone.now() + timedelta(seconds=30))

    assert job_services.jobs_reap() == {"requeued": 0, "failed": 0}
    assert Job.objects.get(pk=job.pk).status == "processing"


def test_a_retried_async_job_polls_the_upstream_job_it_had_instead_of_submitting_again(
        upstream_emulator, buyer, fast_polls, monkeypatch):
    _, secret, _, token = buyer("ad-image-tagging")
    job = _submit("ad-image-tagging", secret, token)
    # The first attempt submitted the upstream job, then its worker died.
    submitted = aliyun_client.call(product="imagerecog", version="2019-09-30", action="TaggingAdImage",
                                   form={"ImageURL": IMAGE})
    job = _died_midway(job, upstream_job_id=submitted.request_id, upstream_status="QUEUING")
    job_services.jobs_reap()
    actions = []
    real = aliyun_client.call
    monkeypatch.setattr(aliyun_client, "call", lambda **kwargs: actions.append(kwargs["action"]) or real(**kwargs))

    job = paid_job_run(job_id=job.pk)

    assert job.status == "succeeded" and job.upstream_job_id == submitted.request_id
    assert set(actions) == {"GetAsyncJobResult"}


def test_after_the_last_attempt_the_reaper_fails_the_job_and_gives_the_call_back(upstream_emulator, buyer, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    job = _died_midway(_died_midway(job))

    assert job_services.jobs_reap() == {"requeued": 0, "failed": 1}

    job.refresh_from_db()
    assert (job.status, job.http_status, job.charged, job.lease_expires_at) == ("failed", 503, False, None)
    assert "stopped before it finished (2 times)" in job.error["error"] and job.error["charged"] is False
    assert job.expires_at is not None
    payment.refresh_from_db()
    assert payment.used_calls == 0
    call = ToolCall.objects.get(pk=job.call_id)
    assert (call.outcome, call.amount_cents) == ("abandoned", 0)
    # A late delivery of its message finds nothing to do.
    assert paid_job_run(job_id=job.pk) is None


def test_a_failed_x402_job_releases_its_authorization_unsettled(upstream_emulator, x402_payer, settings):
    _settle_after()
    settings.JOB_MAX_ATTEMPTS = 1
    job = _died_midway(_x402_submit(x402_payer))

    job_services.jobs_reap()

    ledger = X402Authorization.objects.get()
    assert ledger.status == "unsettled" and ledger.payment.status == "pending"
    job.refresh_from_db()
    assert job.status == "failed" and job.charged is False and job.x402_payload is None


def test_a_worker_that_died_while_settling_leaves_the_settlement_unknown_not_released(
        upstream_emulator, x402_payer, settings):
    _settle_after()
    settings.JOB_MAX_ATTEMPTS = 1
    job = _died_midway(_x402_submit(x402_payer), settling_started_at=timezone.now())

    job_services.jobs_reap()

    ledger = X402Authorization.objects.get()
    assert ledger.status == "unknown"
    job.refresh_from_db()
    assert job.status == "failed" and job.error["settlement"] == "unknown"
    assert ledger.payment_id in job.error["error"]


def test_a_retry_after_a_death_while_settling_does_not_call_again(upstream_emulator, x402_payer, monkeypatch):
    _settle_after()
    job = _died_midway(_x402_submit(x402_payer), settling_started_at=timezone.now())
    job_services.jobs_reap()
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("called again"))

    job = paid_job_run(job_id=job.pk)

    assert job.status == "failed" and X402Authorization.objects.get().status == "unknown"


def test_a_job_settled_by_an_attempt_that_died_is_not_settled_twice(upstream_emulator, x402_payer, monkeypatch):
    from payments.facilitators import SandboxFacilitator

    job = _x402_submit(x402_payer)
    # settle_first: the first attempt settled, then its worker died before the upstream answered.
    from payments.pipeline import _job_purchase
    from payments.x402_gateway import x402_settle

    assert x402_settle(_job_purchase(job).x402).success
    job = _died_midway(job, settling_started_at=timezone.now())
    job_services.jobs_reap()
    monkeypatch.setattr(SandboxFacilitator, "settle", lambda *args: pytest.fail("settled twice"))

    job = paid_job_run(job_id=job.pk)

    assert job.status == "succeeded" and job.charged is True and job.receipt
    assert X402Authorization.objects.get().status == "settled"


def test_a_job_whose_call_an_earlier_attempt_ended_as_a_failure_is_not_called_again(upstream_emulator, buyer,
                                                                                    monkeypatch):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    ToolCall.objects.filter(pk=job.call_id).update(outcome="upstream_error", http_status=502, error="boom")
    job = _died_midway(job)
    job_services.jobs_reap()
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("called again"))

    job = paid_job_run(job_id=job.pk)

    assert job.status == "failed" and "boom" in job.error["error"] and job.charged is False


def test_a_result_lost_with_its_worker_is_not_charged_when_the_job_fails(upstream_emulator, buyer, settings):
    settings.JOB_MAX_ATTEMPTS = 1
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    ToolCall.objects.filter(pk=job.call_id).update(outcome="succeeded", http_status=200, amount_cents=20)
    job = _died_midway(job)

    job_services.jobs_reap()

    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert ToolCall.objects.get(pk=job.call_id).amount_cents == 0


def test_a_worker_that_lost_its_lease_neither_settles_nor_finishes(upstream_emulator, x402_payer, monkeypatch):
    _settle_after()
    job = _x402_submit(x402_payer)
    real = aliyun_client.call_service

    def slow_call(*args, **kwargs):
        answer = real(*args, **kwargs)
        # Meanwhile the lease ran out and the reaper gave the job to another attempt.
        Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        job_services.jobs_reap()
        return answer

    monkeypatch.setattr(aliyun_client, "call_service", slow_call)

    assert paid_job_run(job_id=job.pk) is None

    assert X402Authorization.objects.get().status == "reserved"
    fresh = Job.objects.get(pk=job.pk)
    assert (fresh.status, fresh.attempts, fresh.result) == ("queued", 1, None)


def test_a_worker_that_lost_its_lease_does_not_give_the_payment_back_when_its_call_fails(
        upstream_emulator, buyer, monkeypatch):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)

    def failing_late(*args, **kwargs):
        # The lease ran out mid-call; the reaper handed the job to another attempt before the upstream failed.
        Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        job_services.jobs_reap()
        raise aliyun_client.UpstreamError("server", "boom")

    monkeypatch.setattr(aliyun_client, "call_service", failing_late)

    assert paid_job_run(job_id=job.pk) is None

    # The next attempt owns the call: still open, the payment's call still taken.
    payment.refresh_from_db()
    assert payment.used_calls == 1
    assert ToolCall.objects.get(pk=job.call_id).outcome == "in_progress"
    monkeypatch.undo()
    assert paid_job_run(job_id=job.pk).status == "succeeded"
    payment.refresh_from_db()
    assert payment.used_calls == 1


def test_a_worker_that_lost_its_lease_does_not_record_its_success(upstream_emulator, buyer, monkeypatch):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    real = aliyun_client.call_service

    def answering_late(*args, **kwargs):
        answer = real(*args, **kwargs)
        Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        job_services.jobs_reap()
        return answer

    monkeypatch.setattr(aliyun_client, "call_service", answering_late)

    assert paid_job_run(job_id=job.pk) is None
    assert ToolCall.objects.get(pk=job.call_id).outcome == "in_progress"
    assert Job.objects.get(pk=job.pk).result is None


def test_the_reaper_leaves_a_job_whose_worker_renewed_its_lease_since_it_looked(upstream_emulator, buyer):
    _, secret, payment, token = buyer()
    job = _died_midway(_submit("celebrity-recognition", secret, token))
    looked_at = timezone.now()
    snapshot = Job.objects.get(pk=job.pk)
    # The worker was alive after all: it renews before the reaper acts on what it saw.
    job_services.job_lease_renew(job=job)

    assert job_services.job_fail(job=snapshot, reason="stopped", http_status=503, lease_expired_by=looked_at) is None

    assert Job.objects.get(pk=job.pk).status == "processing"
    payment.refresh_from_db()
    assert payment.used_calls == 1


def test_a_job_whose_settlement_outcome_is_unknown_says_so(upstream_emulator, x402_payer, monkeypatch):
    from payments.facilitators import FacilitatorUnavailable, SandboxFacilitator

    _settle_after()
    job = _x402_submit(x402_payer)

    def no_answer(*args):
        raise FacilitatorUnavailable("the facilitator did not answer in time")

    monkeypatch.setattr(SandboxFacilitator, "settle", no_answer)

    job = paid_job_run(job_id=job.pk)

    assert job.status == "failed" and job.result is None
    assert job.error["settlement"] == "unknown" and job.error["paymentId"]
    assert X402Authorization.objects.get().status == "unknown"


def test_a_job_of_a_service_disabled_since_fails_uncharged_without_calling(upstream_emulator, buyer, monkeypatch):
    from catalog.models import Service

    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    Service.objects.filter(id="celebrity-recognition").update(enabled=False)
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("called"))

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status, job.charged) == ("failed", 503, False)
    assert "disabled" in job.error["error"] and "nothing was charged" in job.error["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_a_call_that_changes_data_is_not_sent_again_after_its_worker_died(upstream_emulator, make_key, paid_token,
                                                                          monkeypatch):
    key, secret = make_key()
    payment, token = paid_token("face-database-create", key)
    answer = paid_call_run(reference="face-database-create", arguments={"Name": "guests"}, api_key=secret,
                           payment_token=token, respond_async=True)
    job = _died_midway(Job.objects.get(pk=answer.body["jobId"]), upstream_sent_at=timezone.now())
    job_services.jobs_reap()
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("sent again"))

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.charged) == ("failed", False) and "not repeated" in job.error["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_a_read_only_call_is_sent_again_after_its_worker_died(upstream_emulator, buyer):
    _, secret, _, token = buyer()
    job = _died_midway(_submit("celebrity-recognition", secret, token), upstream_sent_at=timezone.now())
    job_services.jobs_reap()

    assert paid_job_run(job_id=job.pk).status == "succeeded"


def test_a_job_failed_after_its_payment_settled_does_not_say_nothing_was_charged(upstream_emulator, x402_payer,
                                                                                settings):
    from payments.pipeline import _job_purchase
    from payments.x402_gateway import x402_settle

    settings.JOB_MAX_ATTEMPTS = 1
    job = _x402_submit(x402_payer)
    assert x402_settle(_job_purchase(job).x402).success
    job = _died_midway(job, settling_started_at=timezone.now())

    job_services.jobs_reap()

    job.refresh_from_db()
    assert job.charged is True and job.error["retryToken"]
    assert "nothing was charged" not in job.error["error"]


def test_a_proven_settlement_is_recorded_even_over_a_released_authorization(upstream_emulator, x402_payer):
    from payments.pipeline import _job_purchase
    from payments.services import x402_authorization_release
    from payments.x402_gateway import x402_settle

    job = _x402_submit(x402_payer)
    x402 = _job_purchase(job).x402
    x402_authorization_release(ledger=x402.ledger)

    assert x402_settle(x402).success

    ledger = X402Authorization.objects.get()
    assert ledger.status == "settled" and ledger.transaction and ledger.payment.status == "paid"


def test_a_queued_job_nobody_took_is_queued_again(upstream_emulator, buyer, django_capture_on_commit_callbacks):
    _, secret, _, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    Job.objects.filter(pk=job.pk).update(enqueued_at=timezone.now() - timedelta(minutes=6))

    with django_capture_on_commit_callbacks() as queued:
        assert job_services.jobs_reap() == {"requeued": 1, "failed": 0}

    assert len(queued) == 1
    assert timezone.now() - Job.objects.get(pk=job.pk).enqueued_at < timedelta(seconds=5)


def test_a_job_no_worker_took_before_its_deadline_fails_uncharged(upstream_emulator, buyer):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    long_ago = timezone.now() - timedelta(hours=2)
    Job.objects.filter(pk=job.pk).update(created_at=long_ago, enqueued_at=long_ago)

    assert job_services.jobs_reap() == {"requeued": 0, "failed": 1}

    job.refresh_from_db()
    assert (job.status, job.http_status) == ("failed", 504) and "no worker took this job" in job.error["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert ToolCall.objects.get(pk=job.call_id).outcome == "timeout"


def test_a_job_claimed_after_its_deadline_fails_without_calling(upstream_emulator, buyer, monkeypatch):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=2))
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("called"))

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status) == ("failed", 504)
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_an_x402_job_reached_after_its_authorization_expired_fails_without_calling(upstream_emulator, x402_payer,
                                                                                  monkeypatch):
    job = _x402_submit(x402_payer)
    X402Authorization.objects.update(valid_before=timezone.now() + timedelta(seconds=5))
    monkeypatch.setattr(aliyun_client, "call_service", lambda *args, **kwargs: pytest.fail("called"))

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status, job.charged) == ("failed", 504, False)
    assert "authorization expired" in job.error["error"]
    assert X402Authorization.objects.get().status == "unsettled"


def test_an_upstream_job_is_waited_for_no_longer_than_its_authorization_can_be_settled(
        upstream_emulator, x402_payer, fast_polls, settings):
    _settle_after()
    settings.X402_FACILITATOR_TIMEOUT = 1
    job = _x402_submit(x402_payer, "ad-image-tagging", image="https://sandbox.invalid/job/stuck")
    X402Authorization.objects.update(valid_before=timezone.now() + timedelta(seconds=1.5))

    job = paid_job_run(job_id=job.pk)

    assert (job.status, job.http_status, job.charged) == ("failed", 504, False)
    assert job.error["code"] == "AsyncJobTimeout"
    assert X402Authorization.objects.get().status == "unsettled"


def test_the_abandoned_calls_reconciler_leaves_jobs_to_their_reaper(upstream_emulator, buyer):
    _, secret, payment, token = buyer()
    job = _submit("celebrity-recognition", secret, token)
    ToolCall.objects.filter(pk=job.call_id).update(started_at=timezone.now() - timedelta(hours=1))

    assert tool_calls_reconcile(older_than=timedelta(minutes=5)) == 0
    assert ToolCall.objects.get(pk=job.call_id).outcome == "in_progress"


def test_a_broker_that_is_down_does_not_lose_the_job(api, upstream_emulator, buyer, monkeypatch,
                                                     django_capture_on_commit_callbacks):
    from jobs.tasks import run_job

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(run_job, "delay", broker_down)
    _, secret, _, token = buyer()

    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/tools/celebrity-recognition", {"ImageURL": IMAGE}, format="json",
                            HTTP_X_PAYMENT_TOKEN=token, HTTP_X_API_KEY=secret, HTTP_PREFER="respond-async")

    assert response.status_code == 202
    assert Job.objects.get().status == "queued"


def test_only_the_hash_of_the_job_secret_is_stored(upstream_emulator, buyer):
    _, secret, _, token = buyer()
    answer = paid_call_run(reference="celebrity-recognition", arguments={"ImageURL": IMAGE}, api_key=secret,
                           payment_token=token, respond_async=True)

    job = Job.objects.get()
    assert job.secret_hash == job_secret_hash(answer.body["jobSecret"])
    assert answer.body["jobSecret"] not in json.dumps(list(Job.objects.values()), default=str)

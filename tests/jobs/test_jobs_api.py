"""`Prefer: respond-async` and GET /api/jobs: submitting a paid call as a job and reading it back.

The job is run in the test process with paid_job_run (the worker's side of
the pipeline), against the emulator over real HTTP; tests/jobs/test_job_worker.py
runs it in a real Celery worker.
"""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from jsonschema import Draft202012Validator

from catalog.models import PricingPolicy, Service
from jobs.models import Job
from jobs.services import jobs_purge
from payments.models import Payment, ToolCall, X402Authorization
from payments.pipeline import paid_job_run

pytestmark = pytest.mark.django_db

URL = "/api/tools/celebrity-recognition"
IMAGE = "https://example.com/face.jpg"
TAGGING = "/api/tools/ad-image-tagging"


def _post(api, url=URL, body=None, *, prefer="respond-async", token=None, key=None, **headers):
    if prefer is not None:
        headers["HTTP_PREFER"] = prefer
    if token:
        headers["HTTP_X_PAYMENT_TOKEN"] = token
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return api.generic("POST", url, json.dumps({"ImageURL": IMAGE} if body is None else body),
                       content_type="application/json", **headers)


def _read(api, job_id, *, key=None, secret=None):
    headers = {}
    if key:
        headers["HTTP_X_API_KEY"] = key
    if secret:
        headers["HTTP_X_JOB_SECRET"] = secret
    return api.get(f"/api/jobs/{job_id}", **headers)


def _read_many(api, ids: str, *, key=None, secret=None):
    headers = {"HTTP_X_API_KEY": key} if key else {}
    if secret:
        headers["HTTP_X_JOB_SECRET"] = secret
    return api.get("/api/jobs", {"ids": ids}, **headers)


@pytest.fixture
def buyer(make_key, paid_token):
    """A key and a paid 2-call token of celebrity-recognition bound to it."""
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key, max_calls=2)
    return key, secret, payment, token


@pytest.fixture
def fast_polls(settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS = 0.01
    settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.02


def _submitted(api, buyer, **options):
    _, secret, _, token = buyer
    response = _post(api, token=token, key=secret, **options)
    assert response.status_code == 202, response.json()
    return response.json()


def _validator(api, name: str) -> Draft202012Validator:
    document = api.get("/openapi.json").json()
    return Draft202012Validator({**document["components"]["schemas"][name], "components": document["components"]})


# --- Submitting ---------------------------------------------------------------------

def test_a_paid_call_preferring_async_is_accepted_as_a_job_and_its_call_taken_now(api, upstream_emulator, buyer):
    key, secret, payment, token = buyer

    response = _post(api, token=token, key=secret)

    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get()
    assert body["jobId"] == job.pk and body["status"] == "queued" and body["serviceId"] == "celebrity-recognition"
    assert body["statusUrl"] == f"http://localhost:8000/api/jobs/{job.pk}" == response["Location"]
    assert body["jobSecret"].startswith("s402job_") and body["jobSecret"] not in job.secret_hash
    assert response["Retry-After"] == "2" and body["retryAfterSeconds"] == 2
    assert response["Preference-Applied"] == "respond-async"
    assert response["X-Payment-Remaining-Calls"] == "1"
    assert (body["result"], body["error"], body["charged"], body["finishedAt"]) == (None, None, False, None)
    payment.refresh_from_db()
    assert payment.used_calls == 1
    assert (job.call.outcome, job.call.payment_id, job.api_key, job.arguments) == (
        "in_progress", payment.pk, key, {"ImageURL": IMAGE})
    _validator(api, "JobAccepted").validate(body)


def test_the_worker_makes_the_call_and_the_owner_reads_the_result(api, upstream_emulator, buyer):
    key, secret, payment, _ = buyer
    job_id = _submitted(api, buyer)["jobId"]

    job = paid_job_run(job_id=job_id)
    response = _read(api, job_id, key=secret)

    assert job.status == "succeeded"
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert "Retry-After" not in response
    body = response.json()
    assert (body["status"], body["charged"], body["attempts"], body["error"]) == ("succeeded", True, 1, None)
    assert set(body["result"]) == {"code", "content", "data", "message", "requestId"}
    assert body["result"]["data"]["Action"] == "DetectCelebrity" and body["result"]["data"]["Result"]
    created, finished = (timezone.datetime.fromisoformat(body[name]) for name in ("createdAt", "finishedAt"))
    assert timedelta(0) <= finished - created < timedelta(seconds=10)
    assert timezone.datetime.fromisoformat(body["expiresAt"]) - finished == timedelta(hours=24)
    call = ToolCall.objects.get(pk=Job.objects.get().call_id)
    assert (call.outcome, call.http_status, call.amount_cents) == ("succeeded", 200, 10)
    assert call.upstream_request_id == body["result"]["requestId"]
    payment.refresh_from_db()
    assert payment.used_calls == 1
    _validator(api, "JobRecord").validate(body)


def test_a_queued_job_is_read_with_its_retry_after_and_never_cached(api, upstream_emulator, buyer):
    submitted = _submitted(api, buyer)

    response = _read(api, submitted["jobId"], secret=submitted["jobSecret"])

    assert response.status_code == 200 and response["Retry-After"] == "2" and response["Cache-Control"] == "no-store"
    assert response.json()["status"] == "queued" and "jobSecret" not in response.json()


def test_the_result_retention_is_configurable(api, upstream_emulator, buyer, settings):
    settings.JOB_RESULT_TTL_SECONDS = 600
    job = paid_job_run(job_id=_submitted(api, buyer)["jobId"])

    assert job.expires_at - job.finished_at == timedelta(seconds=600)


def test_an_anonymous_x402_payer_reads_its_job_with_the_job_secret(api, upstream_emulator, x402_payer):
    challenge = _post(api, prefer=None)["PAYMENT-REQUIRED"]
    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge))
    assert response.status_code == 202, response.json()
    submitted = response.json()
    ledger = X402Authorization.objects.get()
    # Verified and reserved, not settled: no result yet.
    assert ledger.status == "reserved" and ledger.payment.status == "pending"
    assert "X-Payment-Remaining-Calls" not in response

    paid_job_run(job_id=submitted["jobId"])
    body = _read(api, submitted["jobId"], secret=submitted["jobSecret"]).json()

    ledger.refresh_from_db()
    assert ledger.status == "settled" and ledger.payment.status == "paid"
    assert body["status"] == "succeeded" and body["charged"] is True
    assert body["paymentResponse"]
    job = Job.objects.get()
    assert (job.x402_payload, job.x402_requirements) == (None, None)


def test_an_unpaid_call_preferring_async_gets_the_402_and_no_job(api):
    response = _post(api)

    assert response.status_code == 402 and "Preference-Applied" not in response
    assert not Job.objects.exists() and not ToolCall.objects.exists()


def test_bad_arguments_preferring_async_are_refused_now_and_charge_nothing(api, buyer):
    _, secret, payment, token = buyer

    response = _post(api, body={"ImageURL": 42}, token=token, key=secret)

    assert response.status_code == 400 and "ImageURL" in response.json()["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0 and not Job.objects.exists()


def test_an_api_key_not_allowed_the_service_is_refused_before_any_job(api, make_key, paid_token):
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key)
    key.allow_all_services = False
    key.save()
    key.allowed_services.set([Service.objects.get(id="scene-recognition")])

    response = _post(api, token=token, key=secret)

    assert response.status_code == 403 and not Job.objects.exists()


@pytest.mark.parametrize("prefer", [
    "junk", "respond-async=yes", "respond-async=1", "respond-async-please", '"respond-async"', ",,,", ";;;",
    "return=minimal", "wait=10", "respond_async", "respond-async=" + "x" * 2000, "a" * 5000,
])
def test_prefer_with_junk_values_is_ignored_and_the_call_answered_now(api, upstream_emulator, buyer, prefer):
    _, secret, payment, token = buyer

    response = _post(api, token=token, key=secret, prefer=prefer)

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["Action"] == "DetectCelebrity"
    assert "Preference-Applied" not in response and not Job.objects.exists()


@pytest.mark.parametrize("prefer", [
    "respond-async", "RESPOND-ASYNC", "wait=5, respond-async", "respond-async; foo=bar", "return=minimal,respond-async",
    'respond-async=""', 'handling=lenient; note="a, b", respond-async',
])
def test_respond_async_is_honoured_among_other_preferences(api, upstream_emulator, buyer, prefer):
    assert _submitted(api, buyer, prefer=prefer)["status"] == "queued"


# --- No result, no charge -----------------------------------------------------------

def test_a_job_the_upstream_refuses_fails_and_gives_the_call_back(api, upstream_emulator, buyer):
    _, secret, payment, token = buyer
    submitted = _submitted(api, buyer, body={"ImageURL": "https://sandbox.invalid/error/InvalidImage.Download"})

    job = paid_job_run(job_id=submitted["jobId"])
    body = _read(api, job.pk, key=secret).json()

    assert body["status"] == "failed" and body["result"] is None and body["charged"] is False
    assert body["error"]["httpStatus"] == 400 and body["error"]["code"] == "InvalidImage.Download"
    assert body["error"]["charged"] is False and body["error"]["error"]
    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert job.call.outcome == "client_error"


def test_an_x402_job_that_fails_upstream_is_never_settled_under_settle_after(api, upstream_emulator, x402_payer):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)
    body = {"ImageURL": "https://sandbox.invalid/error/InternalError"}
    challenge = _post(api, prefer=None)["PAYMENT-REQUIRED"]
    submitted = _post(api, body=body, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge)).json()

    paid_job_run(job_id=submitted["jobId"])
    record = _read(api, submitted["jobId"], secret=submitted["jobSecret"]).json()

    assert record["status"] == "failed" and record["charged"] is False and record["error"]["httpStatus"] == 502
    assert "paymentResponse" not in record
    ledger = X402Authorization.objects.get()
    assert ledger.status == "unsettled" and ledger.payment.status == "pending"


def test_under_settle_first_a_failed_job_hands_back_a_token_worth_the_call(api, upstream_emulator, x402_payer):
    body = {"ImageURL": "https://sandbox.invalid/error/InternalError"}
    challenge = _post(api, prefer=None)["PAYMENT-REQUIRED"]
    submitted = _post(api, body=body, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge)).json()

    paid_job_run(job_id=submitted["jobId"])
    record = _read(api, submitted["jobId"], secret=submitted["jobSecret"]).json()

    # The policy settles before the call: the money moved, so the job says so and owes the call.
    assert record["status"] == "failed" and record["charged"] is True and record["paymentResponse"]
    assert X402Authorization.objects.get().status == "settled"
    retry = _post(api, prefer=None, token=record["error"]["retryToken"])
    assert retry.status_code == 200, retry.json()


def test_a_job_whose_settlement_fails_withholds_the_result_and_says_nothing_was_charged(
        api, upstream_emulator, x402_payer, monkeypatch):
    from x402.schemas import SettleResponse

    from payments.facilitators import SandboxFacilitator

    challenge = _post(api, prefer=None)["PAYMENT-REQUIRED"]
    submitted = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge)).json()
    refused = SettleResponse(success=False, error_reason="invalid_exact_evm_insufficient_balance", transaction="",
                             network="eip155:84532", payer=x402_payer.address)
    monkeypatch.setattr(SandboxFacilitator, "settle", lambda self, payload, requirements: refused)

    paid_job_run(job_id=submitted["jobId"])
    record = _read(api, submitted["jobId"], secret=submitted["jobSecret"]).json()

    assert record["status"] == "failed" and record["result"] is None and record["charged"] is False
    assert record["error"]["httpStatus"] == 402
    assert record["error"]["invalidReason"] == "invalid_exact_evm_insufficient_balance"
    assert "accepts" not in record["error"] and "settlement failed" in record["error"]["error"]


# --- Reading: only the owner --------------------------------------------------------

def test_another_keys_job_is_not_found_exactly_as_a_job_that_never_existed(api, upstream_emulator, buyer, make_key):
    job_id = _submitted(api, buyer)["jobId"]
    paid_job_run(job_id=job_id)
    _, stranger = make_key("stranger")

    theirs = _read(api, job_id, key=stranger)
    nobody = _read(api, "job_" + "0" * 32, key=stranger)

    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["status"] == "not_found" and "result" not in theirs.json()
    assert {**theirs.json(), "jobId": ""} == {**nobody.json(), "jobId": ""}


def test_without_a_key_or_secret_a_job_is_not_found(api, upstream_emulator, buyer):
    job_id = _submitted(api, buyer)["jobId"]

    assert _read(api, job_id).status_code == 404


def test_a_wrong_secret_finds_nothing_and_the_right_one_among_several_finds_the_job(api, upstream_emulator, buyer):
    submitted = _submitted(api, buyer)
    other = _submitted(api, buyer)

    assert _read(api, submitted["jobId"], secret=other["jobSecret"]).status_code == 404
    assert _read(api, submitted["jobId"], secret="s402job_" + "A" * 43).status_code == 404
    both = f" {other['jobSecret']} ,{submitted['jobSecret']}"
    assert _read(api, submitted["jobId"], secret=both).json()["status"] == "queued"


def test_an_unknown_or_revoked_key_is_refused_401(api, upstream_emulator, buyer):
    from payments.services import api_key_revoke

    key, secret, _, _ = buyer
    job_id = _submitted(api, buyer)["jobId"]

    assert _read(api, job_id, key="s402_000000000000_nope").status_code == 401
    api_key_revoke(api_key=key)
    assert _read(api, job_id, key=secret).status_code == 401


@pytest.mark.parametrize("job_id", ["nope", "job_", "job_" + "0" * 31, "job_" + "G" * 32, "JOB_" + "0" * 32,
                                    "job_" + "0" * 33, "pay_" + "0" * 32, "job_%00" + "0" * 29])
def test_a_malformed_job_id_is_refused_400(api, job_id):
    response = _read(api, job_id)

    assert response.status_code == 400
    assert "is not a job id" in response.json()["error"] and response.json()["field"] == "job_id"


def test_an_expired_job_is_not_found_before_and_after_it_is_purged(api, upstream_emulator, buyer):
    _, secret, _, _ = buyer
    job = paid_job_run(job_id=_submitted(api, buyer)["jobId"])
    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert _read(api, job.pk, key=secret).json()["status"] == "not_found"
    assert jobs_purge() == 1
    assert _read(api, job.pk, key=secret).json()["status"] == "not_found"
    # The call's record outlives its job: statistics and the ledger still count it.
    assert ToolCall.objects.filter(pk=job.call_id, outcome="succeeded").exists()


def test_the_purge_keeps_unfinished_and_unexpired_jobs(api, upstream_emulator, buyer):
    queued = _submitted(api, buyer)["jobId"]
    finished = paid_job_run(job_id=_submitted(api, buyer)["jobId"])

    assert jobs_purge() == 0
    assert jobs_purge(now=finished.expires_at + timedelta(seconds=1)) == 1
    assert list(Job.objects.values_list("pk", flat=True)) == [queued]


# --- Reading several ----------------------------------------------------------------

def test_several_jobs_are_read_in_the_order_asked_with_not_found_for_the_others(
        api, upstream_emulator, buyer, make_key, paid_token):
    _, secret, _, _ = buyer
    first, second = _submitted(api, buyer)["jobId"], _submitted(api, buyer)["jobId"]
    paid_job_run(job_id=second)
    stranger, stranger_secret = make_key("stranger")
    _, token = paid_token("celebrity-recognition", stranger)
    theirs = _post(api, token=token, key=stranger_secret).json()["jobId"]
    unknown = "job_" + "f" * 32

    response = _read_many(api, f"{second},{unknown},{first},{theirs},{second}", key=secret)

    assert response.status_code == 200 and response["Retry-After"] == "2"
    jobs = response.json()["jobs"]
    assert [(job["jobId"], job["status"]) for job in jobs] == [
        (second, "succeeded"), (unknown, "not_found"), (first, "queued"), (theirs, "not_found")]
    assert jobs[0]["result"]["data"]["Action"] == "DetectCelebrity"
    _validator(api, "JobList").validate(response.json())


def test_ten_ids_are_read_and_spaces_and_empty_items_are_forgiven(api, upstream_emulator, buyer):
    _, secret, _, _ = buyer
    ids = [_submitted(api, buyer)["jobId"], *(f"job_{index:032x}" for index in range(9))]

    response = _read_many(api, " , ".join(ids) + ",,", key=secret)

    assert response.status_code == 200 and len(response.json()["jobs"]) == 10


def test_secrets_read_several_anonymous_jobs(api, upstream_emulator, x402_payer):
    submitted = []
    for _ in range(2):
        challenge = _post(api, prefer=None)["PAYMENT-REQUIRED"]
        submitted.append(_post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge)).json())

    response = _read_many(api, ",".join(job["jobId"] for job in submitted),
                          secret=",".join(job["jobSecret"] for job in submitted))

    assert [job["status"] for job in response.json()["jobs"]] == ["queued", "queued"]


@pytest.mark.parametrize(("query", "message"), [
    ("ids=" + ",".join(f"job_{index:032x}" for index in range(11)), "ids holds 11 ids; at most 10"),
    ("ids=", "ids holds no job id"),
    ("ids=,,,", "ids holds no job id"),
    ("ids=%20,%20,", "ids holds no job id"),
    ("", "ids is required"),
    ("id=job_" + "0" * 32, "ids is required"),
    (f"ids=job_{'0' * 32},nope", "'nope' is not a job id"),
    (f"ids=job_{'0' * 32};job_{'1' * 32}", "is not a job id"),
])
def test_a_bad_id_list_is_refused_400_with_a_sentence(api, query, message):
    response = api.get(f"/api/jobs?{query}")

    assert response.status_code == 400
    assert message in response.json()["error"] and response.json()["field"] == "ids"


def test_eleven_ids_are_refused_even_when_some_repeat(api):
    ids = ",".join([f"job_{'0' * 32}"] * 11)

    assert api.get("/api/jobs", {"ids": ids}).status_code == 400


def test_reading_jobs_writes_nothing_and_takes_a_bounded_number_of_queries(
        api, upstream_emulator, buyer, django_assert_max_num_queries):
    _, secret, _, _ = buyer
    ids = ",".join(_submitted(api, buyer)["jobId"] for _ in range(2))
    before = list(Payment.objects.values_list("used_calls", flat=True))

    with django_assert_max_num_queries(3):
        assert _read_many(api, ids, key=secret).status_code == 200

    assert list(Payment.objects.values_list("used_calls", flat=True)) == before

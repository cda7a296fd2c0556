"""Async jobs over /mcp: a paid tool call asking for a job (`_meta["server402/respond-async"]`) and the free
`get_job_result` tool that reads it, beside their HTTP twins (`Prefer: respond-async`, `GET /api/jobs/<id>`).

Results are checked against the official MCP schema of the version spoken (mcp_types), and structuredContent
against the tool's own outputSchema as the official client checks it: with an empty registry, so a `$ref`
must resolve inside the schema. A job is run here with paid_job_run, the worker's side of the pipeline.
"""

import json
from types import SimpleNamespace

import pytest
from eth_account import Account
from jsonschema import Draft202012Validator
from referencing import Registry
from x402 import x402ClientSync
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.schemas import parse_payment_required

from jobs.models import Job
from payments.models import Payment, ToolCall, X402Authorization
from payments.pipeline import paid_job_run
from payments.services import api_key_revoke
from tests.server402.test_mcp_endpoint import BODY, MODERN, call, error, modern, result, rpc

pytestmark = pytest.mark.django_db

ASYNC = {"server402/respond-async": True}


@pytest.fixture
def owner(make_key, paid_token):
    """A key, its bearer header, and a paid one-call celebrity_recognition token bound to it."""
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    return SimpleNamespace(key=key, secret=secret, payment=payment, token=token,
                           headers={"Authorization": f"Bearer {secret}"})


@pytest.fixture
def fast_polls(settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS = 0.01
    settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.02


def _tools(client, version="2025-11-25") -> dict[str, dict]:
    listed = result(modern(client, "tools/list") if version == MODERN else rpc(client, "tools/list", version=version),
                    "tools/list", version)
    return {tool["name"]: tool for tool in listed["tools"]}


def _conforms(client, name: str, structured: dict) -> None:
    """As the official client validates a non-error result: the listed outputSchema, nothing outside it."""
    Draft202012Validator(_tools(client)[name]["outputSchema"], registry=Registry()).validate(structured)


def _submit(client, owner, arguments=None) -> dict:
    answer = call(client, "celebrity_recognition", {**(arguments or BODY), "paymentToken": owner.token},
                  meta=ASYNC, headers=owner.headers)
    assert not answer["isError"], answer
    return answer


def _read(client, job_id, *, headers=None, secret=None) -> dict:
    arguments = {"jobId": job_id, **({"jobSecret": secret} if secret is not None else {})}
    return call(client, "get_job_result", arguments, headers=headers)


def _payload(client, account) -> dict:
    unpaid = call(client, "celebrity_recognition", BODY)["structuredContent"]
    payer = x402ClientSync()
    payer.register("eip155:*", ExactEvmClientScheme(signer=account))
    return payer.create_payment_payload(parse_payment_required(unpaid)).model_dump(by_alias=True, exclude_none=True)


# --- Asking for a job ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-03-26", "2025-11-25", MODERN])
def test_a_tool_call_asking_for_a_job_returns_the_job_id(client, owner, upstream_emulator, version):
    params = {"name": "celebrity_recognition", "arguments": {**BODY, "paymentToken": owner.token}, "_meta": ASYNC}
    response = (modern(client, "tools/call", params, headers=owner.headers) if version == MODERN
                else rpc(client, "tools/call", params, version=version, headers=owner.headers))

    answer = result(response, "tools/call", version)

    job = Job.objects.get()
    accepted = answer["structuredContent"]
    assert answer["isError"] is False
    assert (accepted["jobId"], accepted["status"], accepted["serviceId"]) == (job.pk, "queued", "celebrity-recognition")
    assert accepted["statusUrl"].endswith(f"/api/jobs/{job.pk}") and accepted["retryAfterSeconds"] == 2
    assert accepted["jobSecret"].startswith("s402job_")
    assert json.loads(answer["content"][0]["text"]) == accepted
    assert answer["_meta"]["server402/job"] == {"jobId": job.pk, "statusUrl": accepted["statusUrl"]}
    assert answer["_meta"]["server402/remaining-calls"] == 0
    # Paid now (the token's call is taken), made later by a worker.
    owner.payment.refresh_from_db()
    assert owner.payment.used_calls == 1 and job.status == "queued" and job.api_key == owner.key
    _conforms(client, "celebrity_recognition", accepted)


def test_a_tool_call_asking_for_no_job_is_made_at_once(client, owner, upstream_emulator):
    answer = call(client, "celebrity_recognition", {**BODY, "paymentToken": owner.token},
                  meta={"server402/respond-async": False}, headers=owner.headers)
    searched = call(client, "search_services", {"query": "celebrity"}, meta=ASYNC)

    assert not answer["isError"] and answer["structuredContent"]["data"]["Action"] == "DetectCelebrity"
    assert "server402/job" not in answer["_meta"]
    # A free tool has nothing to wait for: it answers at once, job or not.
    assert not searched["isError"] and searched["structuredContent"]["services"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("value", ["true", 1, None, {}])
@pytest.mark.parametrize("version", ["2025-11-25", MODERN])
def test_asking_for_a_job_with_anything_but_true_or_false_is_invalid_params(client, owner, value, version):
    params = {"name": "celebrity_recognition", "arguments": {**BODY, "paymentToken": owner.token},
              "_meta": {"server402/respond-async": value}}
    response = (modern(client, "tools/call", params, headers=owner.headers) if version == MODERN
                else rpc(client, "tools/call", params, headers=owner.headers))

    answer = error(response, 400 if version == MODERN else 200, -32602)

    assert answer["error"]["message"] == \
        'params._meta["server402/respond-async"] must be true (answer with a job) or false'
    owner.payment.refresh_from_db()
    assert owner.payment.used_calls == 0 and not Job.objects.exists() and not ToolCall.objects.exists()


def test_an_unpaid_call_asking_for_a_job_is_still_payment_required_and_queues_nothing(client, api):
    http = api.post("/api/tools/celebrity-recognition", BODY, format="json", HTTP_PREFER="respond-async")

    answer = call(client, "celebrity_recognition", BODY, meta=ASYNC)

    assert http.status_code == 402
    assert answer["isError"] is True and answer["structuredContent"]["status"] == "payment_required"
    assert answer["structuredContent"]["accepts"] == http.json()["accepts"]
    assert "server402/job" not in answer.get("_meta", {})
    assert not Job.objects.exists() and not ToolCall.objects.exists() and not Payment.objects.exists()


def test_an_x402_payment_in_meta_pays_for_a_job_and_settles_only_once_it_has_a_result(client, upstream_emulator):
    account = Account.create()
    payment = _payload(client, account)

    accepted = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payment, **ASYNC})
    ledger = X402Authorization.objects.get()
    reserved = ledger.status
    paid_job_run(job_id=accepted["structuredContent"]["jobId"])
    ledger.refresh_from_db()
    done = _read(client, accepted["structuredContent"]["jobId"], secret=accepted["structuredContent"]["jobSecret"])

    assert not accepted["isError"] and accepted["structuredContent"]["status"] == "queued"
    # Nothing settled at acceptance: no receipt yet, and no remaining calls to report for x402.
    assert set(accepted["_meta"]) == {"server402/job"}
    assert (reserved, ledger.status) == ("reserved", "settled")
    record = done["structuredContent"]
    assert not done["isError"] and record["status"] == "succeeded" and record["charged"] is True
    assert record["paymentResponse"]
    receipt = done["_meta"]["x402/payment-response"]
    assert receipt["success"] is True and receipt["payer"] == account.address
    assert receipt["transaction"] == ledger.transaction


# --- Reading it: get_job_result ----------------------------------------------------------


def test_get_job_result_reads_the_queued_job_then_its_result_as_get_api_jobs_does(client, api, owner,
                                                                                  upstream_emulator):
    job_id = _submit(client, owner)["structuredContent"]["jobId"]

    queued = _read(client, job_id, headers=owner.headers)
    paid_job_run(job_id=job_id)
    done = _read(client, job_id, headers=owner.headers)

    assert not queued["isError"] and queued["structuredContent"]["status"] == "queued"
    assert queued["structuredContent"]["retryAfterSeconds"] == 2
    record = done["structuredContent"]
    assert done["isError"] is False and json.loads(done["content"][0]["text"]) == record
    assert (record["status"], record["charged"], record["error"]) == ("succeeded", True, None)
    assert record["result"]["data"]["Action"] == "DetectCelebrity" and "retryAfterSeconds" not in record
    assert record == api.get(f"/api/jobs/{job_id}", HTTP_X_API_KEY=owner.secret).json()
    assert "x402/payment-response" not in done.get("_meta", {})
    _conforms(client, "get_job_result", queued["structuredContent"])
    _conforms(client, "get_job_result", record)


def test_the_job_secret_reads_the_job_without_an_api_key(client, owner, upstream_emulator):
    accepted = _submit(client, owner)["structuredContent"]

    by_secret = _read(client, accepted["jobId"], secret=accepted["jobSecret"])
    wrong_secret = _read(client, accepted["jobId"], secret="s402job_not-this-one")

    assert not by_secret["isError"] and by_secret["structuredContent"]["jobId"] == accepted["jobId"]
    assert wrong_secret["isError"] and wrong_secret["structuredContent"]["status"] == "not_found"


def test_another_keys_job_reads_as_not_found_like_a_job_that_never_existed(client, api, owner, make_key,
                                                                           upstream_emulator):
    job_id = _submit(client, owner)["structuredContent"]["jobId"]
    _, stranger = make_key(label="stranger")
    never = "job_" + "0" * 32

    answers = [_read(client, job_id, headers={"X-API-Key": stranger}), _read(client, job_id),
               _read(client, never, headers=owner.headers)]

    http = api.get(f"/api/jobs/{job_id}", HTTP_X_API_KEY=stranger)
    assert http.status_code == 404
    for answer, asked in zip(answers, [job_id, job_id, never], strict=True):
        assert answer["isError"] is True
        assert answer["structuredContent"] == {**http.json(), "jobId": asked}
        assert answer["structuredContent"]["status"] == "not_found"


def test_a_malformed_job_id_is_an_input_error_with_the_http_sentence(client, api, owner):
    http = api.get("/api/jobs/job_123", HTTP_X_API_KEY=owner.secret)

    answer = _read(client, "job_123", headers=owner.headers)

    assert http.status_code == 400
    assert answer["isError"] is True
    assert answer["structuredContent"]["error"] == http.json()["error"]
    assert answer["structuredContent"]["error"].startswith("'job_123' is not a job id")
    assert (answer["structuredContent"]["httpStatus"], answer["structuredContent"]["field"]) == (400, "jobId")


@pytest.mark.parametrize(("arguments", "field", "message"), [
    ({}, "jobId", "jobId is required"),
    ({"jobId": 5}, "jobId", "jobId must be a string"),
    ({"jobId": "job_" + "0" * 32, "jobSecret": ["a"]}, "jobSecret", "jobSecret must be a string"),
    ({"jobId": "job_" + "0" * 32, "id": 1}, "id", "unknown argument 'id'; get_job_result takes jobId, jobSecret"),
])
def test_get_job_result_names_its_own_arguments_in_errors(client, arguments, field, message):
    answer = call(client, "get_job_result", arguments)

    assert answer["isError"] is True
    assert (answer["structuredContent"]["error"], answer["structuredContent"]["field"]) == (message, field)


def test_an_unknown_or_revoked_api_key_cannot_read_a_job_and_hears_the_http_sentence(client, api, owner,
                                                                                    upstream_emulator):
    job_id = _submit(client, owner)["structuredContent"]["jobId"]
    unknown = api.get(f"/api/jobs/{job_id}", HTTP_AUTHORIZATION="Bearer s402_nope").json()["error"]

    by_unknown = _read(client, job_id, headers={"Authorization": "Bearer s402_nope"})
    api_key_revoke(api_key=owner.key)
    by_revoked = _read(client, job_id, headers=owner.headers)
    revoked = api.get(f"/api/jobs/{job_id}", HTTP_AUTHORIZATION=f"Bearer {owner.secret}").json()["error"]

    assert by_unknown["isError"] and by_unknown["structuredContent"] == {
        "status": "error", "httpStatus": 401, "error": unknown}
    assert by_revoked["isError"] and by_revoked["structuredContent"]["error"] == revoked == "api key has been revoked"


def test_a_failed_job_reads_as_failed_with_why_and_not_as_a_tool_error(client, owner, upstream_emulator):
    job_id = _submit(client, owner, {"ImageURL": "https://sandbox.invalid/error/InvalidImage.Download"})[
        "structuredContent"]["jobId"]

    paid_job_run(job_id=job_id)
    answer = _read(client, job_id, headers=owner.headers)

    record = answer["structuredContent"]
    assert answer["isError"] is False
    assert (record["status"], record["charged"], record["result"]) == ("failed", False, None)
    assert record["error"]["httpStatus"] == 400 and record["error"]["code"] == "InvalidImage.Download"
    assert record["error"]["error"]
    owner.payment.refresh_from_db()
    assert owner.payment.used_calls == 0
    _conforms(client, "get_job_result", record)


def test_an_async_upstream_action_runs_as_a_job_that_polls_its_upstream_job(client, make_key, paid_token,
                                                                           upstream_emulator, fast_polls):
    key, secret = make_key()
    _, token = paid_token("ad-image-tagging", key)
    bearer = {"Authorization": f"Bearer {secret}"}

    accepted = call(client, "ad_image_tagging", {"ImageURL": "https://example.com/ad.jpg", "paymentToken": token},
                    meta=ASYNC, headers=bearer)
    paid_job_run(job_id=accepted["structuredContent"]["jobId"])
    done = _read(client, accepted["structuredContent"]["jobId"], headers=bearer)

    record = done["structuredContent"]
    assert not done["isError"] and record["status"] == "succeeded"
    assert record["result"]["data"]["Action"] == "TaggingAdImage" and record["upstream"]["jobId"]
    _conforms(client, "ad_image_tagging", accepted["structuredContent"])


# --- How a client learns of it -----------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25", MODERN])
def test_get_job_result_is_a_free_read_only_tool_in_every_version(client, version):
    tools = _tools(client, version)

    tool = tools["get_job_result"]
    assert tool["inputSchema"]["required"] == ["jobId"]
    assert set(tool["inputSchema"]["properties"]) == {"jobId", "jobSecret"}
    assert tool["annotations"]["readOnlyHint"] is True and tool["annotations"]["idempotentHint"] is True
    assert "Free." in tool["description"] and "server402/respond-async" in tool["description"]
    # Every output schema stands alone: the official client resolves no $ref outside it.
    assert "$ref" not in json.dumps([tool["outputSchema"] for tool in tools.values()])
    for schema in (tool["outputSchema"] for tool in tools.values()):
        Draft202012Validator.check_schema(schema)


def test_the_instructions_say_once_how_to_ask_for_a_job(client):
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    handshake = result(rpc(client, "initialize", params), "initialize", "2025-11-25")["instructions"]
    discovered = result(modern(client, "server/discover"), "server/discover", MODERN)["instructions"]

    assert handshake == discovered
    assert handshake.count('params._meta["server402/respond-async"]') == 1 and "get_job_result" in handshake

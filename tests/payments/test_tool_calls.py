"""POST /api/tools/<id>: the paid call end to end, through the emulator over real HTTP."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import PricingPolicy, Service
from payments.models import Payment, ToolCall
from payments.services import api_key_revoke

pytestmark = pytest.mark.django_db

IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"
URL = "/api/tools/celebrity-recognition"


def _post(api, url=URL, body=None, *, token=None, key=None, raw=None, **headers):
    if token:
        headers["HTTP_X_PAYMENT_TOKEN"] = token
    if key:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps({"ImageURL": IMAGE} if body is None else body)
    return api.generic("POST", url, data, content_type="application/json", **headers)


@pytest.fixture
def buyer(make_key, paid_token):
    """A key with a paid 1-call token for celebrity-recognition, and the balance left untouched after."""
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    return key, secret, payment, token


def _untouched(payment, key, *, used=0):
    payment.refresh_from_db()
    key.refresh_from_db()
    assert payment.used_calls == used
    assert key.balance_cents == 0
    assert not ToolCall.objects.filter(payment=payment, outcome=ToolCall.Outcome.SUCCEEDED).exists()


# --- Success -----------------------------------------------------------------

def test_a_paid_call_answers_the_seed_envelope_and_records_the_call(api, upstream_emulator, buyer):
    key, secret, payment, token = buyer
    response = _post(api, token=token, key=secret)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"code", "content", "data", "message", "requestId"}
    assert (body["code"], body["content"], body["message"]) == ("200", "", "success")
    assert body["data"]["Action"] == "DetectCelebrity"
    assert isinstance(body["data"]["Result"], dict) and body["data"]["Result"]
    assert body["requestId"]
    assert response["X-Server402-Mode"] == "sandbox"
    assert response["X-Payment-Remaining-Calls"] == "0"
    payment.refresh_from_db()
    assert payment.used_calls == 1 and payment.state() == "exhausted"
    call = ToolCall.objects.get(payment=payment)
    assert call.outcome == "succeeded" and call.http_status == 200
    assert call.api_key == key and call.client_id == key.client_id and call.payment_method == "token"
    assert call.upstream_request_id == body["requestId"] and call.amount_cents == 20
    assert call.latency_ms is not None and call.finished_at is not None


def test_the_legacy_id_and_the_tool_name_reach_the_same_service(api, upstream_emulator, make_key, paid_token):
    key, secret = make_key()
    for path in ("/api/tools/aliyun-facebody-detect-celebrity", "/api/tools/celebrity_recognition"):
        _, token = paid_token("celebrity-recognition", key)
        assert _post(api, path, token=token, key=secret).status_code == 200


def test_a_key_header_works_as_well_as_bearer(api, upstream_emulator, buyer):
    _, secret, _, token = buyer
    assert _post(api, token=token, HTTP_X_API_KEY=secret).status_code == 200


def test_a_token_without_client_binding_is_a_bearer_token(api, upstream_emulator, make_key, paid_token):
    key, _ = make_key()
    _, token = paid_token("celebrity-recognition", key, bind_client=False)
    assert _post(api, token=token).status_code == 200


def test_a_ten_call_token_serves_ten_calls_then_says_it_is_used_up(api, upstream_emulator, make_key, paid_token):
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key, max_calls=10)
    assert [_post(api, token=token, key=secret).status_code for _ in range(10)] == [200] * 10
    refused = _post(api, token=token, key=secret)
    assert refused.status_code == 402
    assert refused.json()["error"] == "payment token has no remaining calls"


# --- Refusals before payment -------------------------------------------------

def test_an_unknown_service_is_404_with_close_matches(api):
    response = _post(api, "/api/tools/celebrity-recognitoin")
    assert response.status_code == 404
    assert response.json()["error"] == "service 'celebrity-recognitoin' not found"
    assert "celebrity-recognition" in response.json()["closestIds"]


def test_a_draft_service_is_404_and_a_disabled_one_503(api):
    Service.objects.filter(id="scene-recognition").update(state=Service.State.DRAFT)
    Service.objects.filter(id="celebrity-recognition").update(enabled=False)
    draft = _post(api, "/api/tools/scene-recognition")
    assert draft.status_code == 404 and draft.json()["error"] == "service 'scene-recognition' is not published"
    disabled = _post(api)
    assert disabled.status_code == 503
    assert disabled.json()["error"] == "service 'celebrity-recognition' is disabled by the operator; try again later"


def test_no_payment_gets_the_seed_402_body_and_writes_nothing(api, seed_001):
    response = _post(api)
    assert response.status_code == 402
    assert response["X-Payment-Required"] == "true"
    body = response.json()
    assert body["type"] == "payment_required" and body["error"] == "payment required"
    assert body["x402Version"] == 2
    assert {"type", "error", "payment", "paymentFlow", "retry", "accepts", "resource", "extensions"} <= set(body)
    assert body["payment"]["amountCents"] == 20 and body["payment"]["serviceId"] == "celebrity-recognition"
    assert body["resource"]["url"].endswith("/api/tools/celebrity-recognition")
    assert body["retry"]["failures"] == seed_001["payment"]["retry"]["failures"]
    assert not Payment.objects.exists() and not ToolCall.objects.exists()


def test_an_unknown_key_is_401(api):
    response = _post(api, key="s402_000000000000_nope")
    assert (response.status_code, response.json()) == (401, {"error": "api key is not valid"})


def test_a_malformed_key_is_401(api):
    assert _post(api, key="hello").json() == {"error": "api key is not valid"}


def test_a_wrong_secret_for_a_real_prefix_is_401(api, make_key):
    _, secret = make_key()
    assert _post(api, key=secret[:-2] + "xx").status_code == 401


def test_a_revoked_key_is_401_and_charges_nothing(api, upstream_emulator, buyer):
    key, secret, payment, token = buyer
    api_key_revoke(api_key=key)
    response = _post(api, token=token, key=secret)
    assert (response.status_code, response.json()) == (401, {"error": "api key has been revoked"})
    _untouched(payment, key)


def test_a_policy_that_requires_a_key_refuses_a_call_without_one(api):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(require_api_key=True)
    response = _post(api)
    assert (response.status_code, response.json()) == (401, {"error": "api key required"})


def test_a_key_not_allowed_for_the_service_is_403(api, make_key):
    _, secret = make_key(allowed_services=[Service.objects.get(id="scene-recognition")])
    response = _post(api, key=secret)
    assert (response.status_code, response.json()) == (403, {"error": "api key is not allowed to call this service"})


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(api, make_key):
    _, secret = make_key(rate_limit_per_minute=2)
    assert [_post(api, key=secret).status_code for _ in range(2)] == [402, 402]
    response = _post(api, key=secret)
    assert response.status_code == 429
    assert response.json()["error"] == "api key rate limit exceeded: 2 calls per minute"
    assert 1 <= int(response["Retry-After"]) <= 60


def test_a_key_over_its_daily_quota_gets_429_until_midnight(api, make_key):
    _, secret = make_key(daily_quota=1)
    assert _post(api, key=secret).status_code == 402
    response = _post(api, key=secret)
    assert response.status_code == 429
    assert response.json()["error"] == "api key daily quota exceeded: 1 calls per day"
    assert 1 <= int(response["Retry-After"]) <= 86_400


def test_a_used_key_records_when_it_was_last_used(api, make_key):
    key, secret = make_key()
    _post(api, key=secret)
    key.refresh_from_db()
    assert key.last_used_at is not None


# --- Bad input: 400 with seed 001's messages, nothing charged ------------------

@pytest.mark.parametrize(("raw", "message"), [
    ("not json", "request body must be a JSON object"),
    ("[1, 2]", "request body must be a JSON object"),
    ('"ImageURL"', "request body must be a JSON object"),
    ("{}", "ImageURL is required"),
    ('{"ImageURL": "https://example.com/a.jpg", "Foo": 1}', "unknown parameter Foo; this service takes ImageURL"),
    ('{"ImageURL": 5}', "ImageURL must be a string"),
    ('{"ImageURL": ["https://example.com/a.jpg"]}', "ImageURL must be a string"),
    ('{"ImageURL": "ftp://example.com/a.jpg"}', "ImageURL must be a valid http or https URL"),
    ('{"ImageURL": "not-a-url"}', "ImageURL must be a valid http or https URL"),
    ('{"ImageURL": "https://"}', "ImageURL must be a valid http or https URL"),
    (json.dumps({"ImageURL": "https://example.com/" + "a" * 4980}), "ImageURL must be at most 2048 characters"),
])
def test_bad_input_is_400_with_a_clear_message_and_charges_nothing(api, buyer, raw, message):
    key, secret, payment, token = buyer
    response = _post(api, raw=raw, token=token, key=secret)
    assert response.status_code == 400
    assert response.json()["error"] == message
    _untouched(payment, key)


def test_a_two_megabyte_body_is_400_and_charges_nothing(api, buyer):
    key, secret, payment, token = buyer
    response = _post(api, raw=json.dumps({"ImageURL": "https://example.com/" + "a" * 2_000_000}),
                     token=token, key=secret)
    assert response.status_code == 400
    assert response.json() == {"error": "request body is too large: at most 1048576 bytes"}
    _untouched(payment, key)


def test_seed_error_examples_hold_for_every_published_service(api):
    for service in Service.objects.filter(state="published"):
        for example in service.error_examples:
            response = _post(api, f"/api/tools/{service.id}", example["input"])
            assert (response.status_code, response.json()["error"]) == (example["statusCode"], example["error"]), (
                service.id)


# --- Token refusals: 402 with the precise reason, nothing charged --------------

def test_a_token_of_another_service_is_refused(api, buyer):
    key, secret, payment, token = buyer
    response = _post(api, "/api/tools/scene-recognition", token=token, key=secret)
    assert response.status_code == 402
    assert response.json()["error"] == "payment token is for another service"
    assert response.json()["type"] == "payment_required"
    _untouched(payment, key)


def test_a_token_of_another_service_works_when_the_policy_allows_reuse(api, upstream_emulator, make_key, paid_token):
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key, allow_reuse=True)
    assert _post(api, "/api/tools/scene-recognition", token=token, key=secret).status_code == 200


def test_a_token_used_after_expiry_is_refused(api, buyer):
    key, secret, payment, token = buyer
    Payment.objects.filter(pk=payment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _post(api, token=token, key=secret)
    assert (response.status_code, response.json()["error"]) == (402, "payment token expired")
    _untouched(payment, key)


def test_a_token_of_another_client_is_refused(api, buyer, make_key):
    key, _, payment, token = buyer
    _, other_secret = make_key("other")
    for credentials in ({"key": other_secret}, {}):
        response = _post(api, token=token, **credentials)
        assert (response.status_code, response.json()["error"]) == (402, "payment token belongs to another client")
    _untouched(payment, key)


def test_a_forged_or_garbled_token_is_refused(api, buyer):
    key, secret, payment, token = buyer
    for forged in (token[:-1] + ("0" if token[-1] != "0" else "1"), "pay_x.y", "garbage", payment.id):
        response = _post(api, token=forged, key=secret)
        assert (response.status_code, response.json()["error"]) == (402, "payment token is not valid")
    _untouched(payment, key)


def test_a_token_of_an_unpaid_payment_is_refused(api, make_key):
    from payments.credentials import payment_token
    from payments.services import payment_create

    key, secret = make_key()
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=key)
    response = _post(api, token=payment_token(payment.id), key=secret)
    assert (response.status_code, response.json()["error"]) == (402, "payment is not paid yet")


# --- Upstream failures: mapped, recorded, and the call given back --------------

@pytest.mark.parametrize(("image", "status", "code", "outcome"), [
    ("https://sandbox.invalid/error/InvalidImage.Download", 400, "InvalidImage.Download", "client_error"),
    ("https://sandbox.invalid/error/ServiceUnavailable", 502, "ServiceUnavailable", "upstream_error"),
    ("https://sandbox.invalid/error/InternalError", 502, "InternalError", "upstream_error"),
    ("https://sandbox.invalid/error/AuthFailed", 502, "AuthFailed", "upstream_error"),
    ("https://sandbox.invalid/error/InvalidApi.NotPurchase", 502, "InvalidApi.NotPurchase", "upstream_error"),
])
def test_an_upstream_failure_is_mapped_and_the_token_call_given_back(
        api, upstream_emulator, buyer, image, status, code, outcome):
    key, secret, payment, token = buyer
    response = _post(api, body={"ImageURL": image}, token=token, key=secret)
    assert response.status_code == status, response.json()
    body = response.json()
    assert body["code"] == code and body["charged"] is False and body["upstreamRequestId"]
    _untouched(payment, key)
    call = ToolCall.objects.get(payment=payment)
    assert (call.outcome, call.http_status, call.upstream_code, call.amount_cents) == (outcome, status, code, 0)
    # The call given back pays for the retry.
    assert _post(api, token=token, key=secret).status_code == 200


def test_an_upstream_that_answers_too_late_is_504_and_charges_nothing(api, upstream_emulator, buyer, settings):
    settings.ALIBABA_CLOUD_READ_TIMEOUT = 0.3
    key, secret, payment, token = buyer
    response = _post(api, body={"ImageURL": "https://sandbox.invalid/slow/1500"}, token=token, key=secret)
    assert (response.status_code, response.json()["error"]) == (504, "the upstream did not answer in time")
    _untouched(payment, key)
    assert ToolCall.objects.get(payment=payment).outcome == "timeout"


def test_missing_upstream_credentials_are_503_and_charge_nothing(api, buyer, settings):
    settings.SANDBOX = False
    settings.ALIBABA_CLOUD_ACCESS_KEY_ID = settings.ALIBABA_CLOUD_ACCESS_KEY_SECRET = None
    key, secret, payment, token = buyer
    response = _post(api, token=token, key=secret)
    assert (response.status_code, response.json()["error"]) == (
        503, "this server has no upstream credentials configured")
    _untouched(payment, key)
    assert ToolCall.objects.get(payment=payment).outcome == "unconfigured"


def test_an_unpaid_post_without_a_body_is_a_price_enquiry_answered_with_402(api):
    response = api.post("/api/tools/celebrity-recognition")

    assert response.status_code == 402
    assert response.json()["accepts"][0]["amount"] == "200000"
    assert ToolCall.objects.count() == 0


def test_a_paid_post_without_a_body_is_still_bad_input_and_charges_nothing(api, buyer):
    key, secret, payment, token = buyer
    response = _post(api, raw="", token=token, key=secret)

    assert response.status_code == 400 and response.json()["error"] == "ImageURL is required"
    _untouched(payment, key)


def test_a_paid_post_without_a_body_calls_a_tool_that_needs_no_arguments(api, upstream_emulator, make_key,
                                                                         paid_token):
    key, secret = make_key()
    payment, token = paid_token("public-figure-recognition", key)

    response = _post(api, "/api/tools/public-figure-recognition", raw="", token=token, key=secret)

    assert response.status_code == 200, response.json()
    payment.refresh_from_db()
    assert payment.used_calls == 1

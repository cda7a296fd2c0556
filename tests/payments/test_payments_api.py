"""The legacy token flow: POST /api/payments, POST /api/payments/<id>/pay, GET /api/payments/<id>."""

import pytest
from django.utils import timezone

from catalog.models import PricingPolicy, Service
from payments.credentials import payment_token
from payments.models import Payment

pytestmark = pytest.mark.django_db


def _create(api, body, key=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    return api.post("/api/payments", body, format="json", **headers)


def _pay(api, payment_id, key=None, body=None):
    headers = {"HTTP_X_API_KEY": key} if key else {}
    return api.post(f"/api/payments/{payment_id}/pay", body or {}, format="json", **headers)


def test_it_creates_a_pending_payment_with_the_seed_fields_and_a_price_snapshot(api, make_key, seed_001):
    key, secret = make_key()
    response = _create(api, {"serviceId": "aliyun-facebody-detect-celebrity"}, secret)
    assert response.status_code == 201
    record = response.json()
    schema_fields = set(seed_001["payment"]["flow"]["createPayment"]["responseSchema"]["properties"])
    assert schema_fields - {"paidAt"} <= set(record)
    assert record["status"] == "pending" and record["serviceId"] == "celebrity-recognition"
    assert record["internalServiceId"] == "aliyun-facebody-detect-celebrity"
    assert (record["amountCents"], record["currency"], record["maxCalls"]) == (20, "USD", 1)
    assert (record["usedCalls"], record["remainingCalls"]) == (0, 0)
    assert record["clientId"] == key.client_id and record["token"] == payment_token(record["paymentId"])
    assert record["payTo"] and record["provider"] == "x402_facilitator" and record["providerId"] == "x402-base-usdc"


def test_a_policy_change_never_alters_an_existing_payment(api, make_key):
    _, secret = make_key()
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}, secret).json()["paymentId"]
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.amount_cents, policy.max_calls = 99, 5
    policy.save()
    record = api.get(f"/api/payments/{payment_id}", HTTP_X_API_KEY=secret).json()
    assert (record["amountCents"], record["maxCalls"]) == (20, 1)


def test_paying_from_the_balance_debits_it_once_and_binds_the_token(api, make_key):
    key, secret = make_key(balance_cents=50)
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}, secret).json()["paymentId"]
    paid = _pay(api, payment_id, secret)
    assert paid.status_code == 200
    record = paid.json()
    assert record["status"] == "paid" and record["remainingCalls"] == 1 and record["method"] == "balance"
    assert record["paidAt"] and record["clientId"] == key.client_id
    key.refresh_from_db()
    assert key.balance_cents == 30
    again = _pay(api, payment_id, secret)
    assert (again.status_code, again.json()["error"]) == (409, "payment is already paid")
    key.refresh_from_db()
    assert key.balance_cents == 30


def test_a_short_balance_is_402_and_debits_nothing(api, make_key):
    key, secret = make_key(balance_cents=19)
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}, secret).json()["paymentId"]
    response = _pay(api, payment_id, secret)
    assert response.status_code == 402
    assert response.json() == {"error": "api key balance is too low: 19 cents, 20 needed", "balanceCents": 19}
    key.refresh_from_db()
    assert key.balance_cents == 19 and Payment.objects.get(pk=payment_id).status == "pending"


def test_paying_needs_a_key(api):
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}).json()["paymentId"]
    assert _pay(api, payment_id).json() == {"error": "api key required"}
    assert _pay(api, payment_id).status_code == 401


def test_another_clients_payment_cannot_be_paid_by_me(api, make_key):
    _, mine = make_key("mine", balance_cents=100)
    _, theirs = make_key("theirs")
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}, theirs).json()["paymentId"]
    response = _pay(api, payment_id, mine)
    # Word for word what an unknown id gets: another client's payment is not even confirmed to exist.
    assert (response.status_code, response.json()) == (404, {"error": "payment not found"})
    assert Payment.objects.get(pk=payment_id).status == "pending"


def test_an_expired_pending_payment_cannot_be_paid(api, make_key):
    key, secret = make_key(balance_cents=100)
    payment_id = _create(api, {"serviceId": "celebrity-recognition"}, secret).json()["paymentId"]
    Payment.objects.filter(pk=payment_id).update(expires_at=timezone.now())
    response = _pay(api, payment_id, secret)
    assert response.status_code == 409 and "expired" in response.json()["error"]
    key.refresh_from_db()
    assert key.balance_cents == 100


def test_an_anonymous_payment_is_bound_to_the_key_that_pays_it(api, make_key):
    key, secret = make_key(balance_cents=20)
    created = _create(api, {"serviceId": "celebrity-recognition"}).json()
    assert "clientId" not in created and created["token"]
    assert _pay(api, created["paymentId"], secret).json()["clientId"] == key.client_id


def test_only_the_bound_client_reads_the_token(api, make_key, paid_token):
    key, secret = make_key()
    _, other = make_key("other")
    payment, token = paid_token("celebrity-recognition", key)
    mine = api.get(f"/api/payments/{payment.id}", HTTP_X_API_KEY=secret).json()
    assert mine["token"] == token and mine["status"] == "paid" and mine["remainingCalls"] == 1
    for headers in ({"HTTP_X_API_KEY": other}, {}):
        response = api.get(f"/api/payments/{payment.id}", **headers)
        assert (response.status_code, response.json()) == (404, {"error": "payment not found"})


def test_verify_reports_exhausted_and_expired(api, make_key, paid_token):
    key, secret = make_key()
    payment, _ = paid_token("celebrity-recognition", key)
    Payment.objects.filter(pk=payment.pk).update(used_calls=1)
    assert api.get(f"/api/payments/{payment.id}", HTTP_X_API_KEY=secret).json()["status"] == "exhausted"
    Payment.objects.filter(pk=payment.pk).update(expires_at=timezone.now())
    record = api.get(f"/api/payments/{payment.id}", HTTP_X_API_KEY=secret).json()
    assert record["status"] == "expired" and record["remainingCalls"] == 0


@pytest.mark.parametrize("payment_id", ["pay_00000000000000000000000000000000", "nope", "pay_" + "x" * 200])
def test_an_unknown_payment_is_404(api, payment_id):
    response = api.get(f"/api/payments/{payment_id}")
    assert (response.status_code, response.json()) == (404, {"error": "payment not found"})


@pytest.mark.parametrize(("body", "status", "message"), [
    ({}, 400, "serviceId: This field is required."),
    ({"serviceId": "no-such-service"}, 404, "service 'no-such-service' not found"),
    ({"serviceId": "celebrity-recognition", "providerId": "paypal"}, 400,
     "providerId must be 'x402-base-usdc' for this service"),
    ({"serviceId": "celebrity-recognition", "extra": 1}, 400, "unknown field extra"),
    ({"serviceId": "Bad Id!"}, 400, None),
])
def test_a_bad_payment_request_is_refused(api, body, status, message):
    response = _create(api, body)
    assert response.status_code == status
    if message:
        assert response.json()["error"] == message
    assert not Payment.objects.exists()


def test_a_draft_service_cannot_be_bought(api):
    Service.objects.filter(id="celebrity-recognition").update(state="draft")
    assert _create(api, {"serviceId": "celebrity-recognition"}).status_code == 404


def test_buying_with_a_key_respects_its_allow_list_and_revocation(api, make_key):
    from payments.services import api_key_revoke

    key, secret = make_key(allowed_services=[Service.objects.get(id="scene-recognition")])
    response = _create(api, {"serviceId": "celebrity-recognition"}, secret)
    assert (response.status_code, response.json()["error"]) == (403, "api key is not allowed to call this service")
    api_key_revoke(api_key=key)
    assert _create(api, {"serviceId": "scene-recognition"}, secret).json() == {"error": "api key has been revoked"}


def test_a_non_object_body_is_400(api):
    response = api.post("/api/payments", [1], format="json")
    assert (response.status_code, response.json()["error"]) == (400, "request body must be a JSON object")

"""Money under contention: real concurrent connections against PostgreSQL, not a sequential loop."""

import json
from collections import Counter

import pytest
from django.test import Client

from catalog.models import Service
from payments.credentials import payment_token
from payments.models import ApiKey, Payment, ToolCall, X402Authorization
from payments.services import api_key_create, payment_create
from tests.conftest import run_concurrently

pytestmark = [pytest.mark.usefixtures("postgresql_only", "committed_db")]

IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"


def _paid(key, **fields):
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=key)
    Payment.objects.filter(pk=payment.pk).update(status="paid", method="balance", **fields)
    return payment


def test_fifty_concurrent_calls_with_a_ten_call_token_give_exactly_ten_results(upstream_emulator):
    created = api_key_create(label="racer")
    payment = _paid(created.api_key, max_calls=10)
    token = payment_token(payment.id)

    def call(_):
        response = Client().post(
            "/api/tools/celebrity-recognition", json.dumps({"ImageURL": IMAGE}), content_type="application/json",
            HTTP_X_PAYMENT_TOKEN=token, HTTP_AUTHORIZATION=f"Bearer {created.secret}")
        return response.status_code, response.json().get("error")

    outcomes = Counter(run_concurrently(call, 50))
    assert outcomes == {(200, None): 10, (402, "payment token has no remaining calls"): 40}
    payment.refresh_from_db()
    assert payment.used_calls == 10
    assert ToolCall.objects.filter(payment=payment, outcome="succeeded").count() == 10
    assert ToolCall.objects.filter(payment=payment).count() == 10


def test_a_balance_pays_for_as_many_payments_as_it_covers_however_many_race():
    created = api_key_create(label="buyer", balance_cents=100)
    payments = [payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
                for _ in range(20)]

    def pay(index):
        response = Client().post(f"/api/payments/{payments[index].id}/pay", {}, content_type="application/json",
                                 HTTP_X_API_KEY=created.secret)
        return response.status_code

    assert Counter(run_concurrently(pay, 20)) == {200: 5, 402: 15}
    assert ApiKey.objects.get(pk=created.api_key.pk).balance_cents == 0
    assert Payment.objects.filter(status="paid").count() == 5


def test_one_payment_paid_twenty_times_at_once_is_debited_once():
    created = api_key_create(label="buyer", balance_cents=1000)
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)

    def pay(_):
        return Client().post(f"/api/payments/{payment.id}/pay", {}, content_type="application/json",
                             HTTP_X_API_KEY=created.secret).status_code

    assert Counter(run_concurrently(pay, 20)) == {200: 1, 409: 19}
    assert ApiKey.objects.get(pk=created.api_key.pk).balance_cents == 980


def test_failed_calls_racing_give_every_call_back(upstream_emulator):
    created = api_key_create(label="racer")
    payment = _paid(created.api_key, max_calls=5)
    token = payment_token(payment.id)

    def call(_):
        return Client().post(
            "/api/tools/celebrity-recognition",
            json.dumps({"ImageURL": "https://sandbox.invalid/error/InvalidImage.Download"}),
            content_type="application/json", HTTP_X_PAYMENT_TOKEN=token, HTTP_X_API_KEY=created.secret,
        ).status_code

    statuses = Counter(run_concurrently(call, 20))
    assert set(statuses) <= {400, 402} and statuses[400] >= 5
    payment.refresh_from_db()
    assert payment.used_calls == 0


def _x402_challenge(url: str, body: dict) -> str:
    response = Client().post(url, json.dumps(body), content_type="application/json")
    assert response.status_code == 402
    return response["PAYMENT-REQUIRED"]


def test_one_x402_authorization_sent_twenty_times_at_once_pays_for_one_call(upstream_emulator, x402_payer):
    url, body = "/api/tools/celebrity-recognition", {"ImageURL": IMAGE}
    signature = x402_payer.header(_x402_challenge(url, body))

    def call(_):
        response = Client().post(url, json.dumps(body), content_type="application/json",
                                 HTTP_PAYMENT_SIGNATURE=signature)
        return response.status_code, response.json().get("invalidReason")

    outcomes = Counter(run_concurrently(call, 20))
    assert outcomes == {(200, None): 1, (402, "invalid_exact_evm_nonce_already_used"): 19}
    assert X402Authorization.objects.get().status == "settled"
    assert ToolCall.objects.count() == 1 and Payment.objects.filter(method="x402").count() == 1


def test_a_legacy_payment_paid_by_twenty_authorizations_at_once_settles_one(x402_payer):
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"))
    url = f"/api/payments/{payment.id}/pay"
    header = _x402_challenge(url, {"method": "x402"})
    signatures = [x402_payer.header(header) for _ in range(20)]

    def pay(index):
        response = Client().post(url, {}, content_type="application/json", HTTP_PAYMENT_SIGNATURE=signatures[index])
        return response.status_code

    outcomes = Counter(run_concurrently(pay, 20))
    assert outcomes[200] == 1 and outcomes[409] == 19
    assert X402Authorization.objects.filter(status="settled").count() == 1
    assert X402Authorization.objects.count() == 1

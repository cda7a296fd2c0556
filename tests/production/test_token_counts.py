"""A token's remaining calls under concurrent calls: each answer reports its own count, none twice.

X-Payment-Remaining-Calls comes from the payment row read again after the conditional UPDATE that took
the call. Adding one to the count read before that UPDATE would save a statement (bench/README.md, "Load",
measured it) but is exact only if that read locked the row; this is what would catch it.
"""

import json
from collections import Counter

import pytest
from django.test import Client

from catalog.models import Service
from payments.credentials import payment_token
from payments.models import Payment, ToolCall
from payments.services import api_key_create, payment_create
from tests.conftest import run_concurrently

pytestmark = [pytest.mark.usefixtures("postgresql_only", "committed_db")]

IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"


def _token(max_calls: int) -> tuple[str, str, Payment]:
    created = api_key_create(label="racer")
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
    Payment.objects.filter(pk=payment.pk).update(status="paid", method="balance", max_calls=max_calls)
    return created.secret, payment_token(payment.id), payment


def test_concurrent_calls_on_one_token_each_answer_a_different_remaining_count(upstream_emulator):
    secret, token, payment = _token(max_calls=12)

    def call(_):
        response = Client().post(
            "/api/tools/celebrity-recognition", json.dumps({"ImageURL": IMAGE}), content_type="application/json",
            HTTP_X_PAYMENT_TOKEN=token, HTTP_AUTHORIZATION=f"Bearer {secret}")
        return response.status_code, response.headers.get("X-Payment-Remaining-Calls")

    outcomes = run_concurrently(call, 16)

    assert Counter(status for status, _ in outcomes) == {200: 12, 402: 4}
    # Twelve calls took the twelfth to the first call of the token: each saw the count its own call left.
    assert sorted(int(remaining) for status, remaining in outcomes if status == 200) == list(range(12))
    payment.refresh_from_db()
    assert payment.used_calls == 12
    assert ToolCall.objects.filter(payment=payment, outcome=ToolCall.Outcome.SUCCEEDED).count() == 12


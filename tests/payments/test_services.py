"""Payments services on real rows: keys, reconciliation of calls cut off midway."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Service
from payments import credentials
from payments.models import ApiKey, Payment, ToolCall
from payments.selectors import ApiKeyRejected, api_key_authenticate
from payments.services import (
    api_key_create,
    api_key_revoke,
    api_key_top_up,
    tool_call_finish,
    tool_call_start,
    tool_calls_reconcile,
)
from payments.tasks import reconcile_abandoned_calls

pytestmark = pytest.mark.django_db


def test_a_key_is_stored_only_as_a_hash_and_shown_once():
    created = api_key_create(label="agent")
    row = ApiKey.objects.get(pk=created.api_key.pk)
    assert created.secret.startswith(f"s402_{row.prefix}_")
    assert created.secret not in {row.secret_hash, row.label, row.prefix}
    assert row.secret_hash == credentials.api_key_hash(created.secret)
    assert api_key_authenticate(created.secret) == row


def test_it_rejects_a_key_with_the_right_prefix_and_a_wrong_secret():
    created = api_key_create(label="agent")
    with pytest.raises(ApiKeyRejected, match="api key is not valid"):
        api_key_authenticate(created.secret + "x")


def test_revoking_keeps_the_first_time():
    created = api_key_create(label="agent")
    first = api_key_revoke(api_key=created.api_key).revoked_at
    assert api_key_revoke(api_key=created.api_key).revoked_at == first
    with pytest.raises(ApiKeyRejected, match="api key has been revoked"):
        api_key_authenticate(created.secret)


def test_top_ups_add_and_refuse_nonsense():
    created = api_key_create(label="agent", balance_cents=5)
    assert api_key_top_up(api_key=created.api_key, amount_cents=15).balance_cents == 20
    with pytest.raises(ValueError):
        api_key_top_up(api_key=created.api_key, amount_cents=0)


def test_a_payment_token_does_not_survive_tampering():
    token = credentials.payment_token("pay_" + "a" * 32)
    assert credentials.payment_token_id(token) == "pay_" + "a" * 32
    assert credentials.payment_token_id("pay_" + "b" * 32 + token[36:]) is None


def _in_flight_call(paid_token, make_key, minutes_ago):
    key, _ = make_key()
    payment, _ = paid_token("celebrity-recognition", key)
    Payment.objects.filter(pk=payment.pk).update(used_calls=1)
    call = tool_call_start(service=Service.objects.get(id="celebrity-recognition"), api_key=key, payment=payment,
                           payment_method="token")
    ToolCall.objects.filter(pk=call.pk).update(started_at=timezone.now() - timedelta(minutes=minutes_ago))
    return payment, call


def test_a_call_cut_off_midway_is_reconciled_and_its_payment_given_back(paid_token, make_key):
    payment, call = _in_flight_call(paid_token, make_key, minutes_ago=10)
    assert reconcile_abandoned_calls() == 1
    call.refresh_from_db()
    payment.refresh_from_db()
    assert call.outcome == "abandoned" and call.amount_cents == 0 and payment.used_calls == 0
    assert reconcile_abandoned_calls() == 0
    payment.refresh_from_db()
    assert payment.used_calls == 0


def test_a_recent_call_in_flight_is_left_alone(paid_token, make_key):
    payment, call = _in_flight_call(paid_token, make_key, minutes_ago=0)
    assert tool_calls_reconcile(older_than=timedelta(minutes=5)) == 0
    payment.refresh_from_db()
    assert payment.used_calls == 1


def test_a_late_finish_does_not_overwrite_a_reconciled_call(paid_token, make_key):
    payment, call = _in_flight_call(paid_token, make_key, minutes_ago=10)
    tool_calls_reconcile(older_than=timedelta(minutes=5))
    finished = tool_call_finish(call=call, outcome="succeeded", http_status=200, latency_ms=5, amount_cents=20)
    assert finished.outcome == "abandoned"

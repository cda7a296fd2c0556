"""The payments ledger of the dashboard: filters, keyset pages, a payment's calls and receipts."""

import importlib
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from catalog.models import Service
from payments import credentials
from payments.models import Payment, ToolCall, X402Authorization
from payments.services import api_key_create, payment_create

pytestmark = pytest.mark.django_db

LEDGER = "/dashboard/payments/"
ROW = re.compile(r'<tr data-payment="(pay_[0-9a-f]+)">')


def _payment(service="celebrity-recognition", client=None, **fields) -> Payment:
    payment = payment_create(service=Service.objects.get(pk=service), client=client)
    if fields:
        Payment.objects.filter(pk=payment.pk).update(**fields)
        payment.refresh_from_db()
    return payment


def _ids(response) -> list[str]:
    assert response.status_code == 200
    return ROW.findall(response.content.decode())


def _shown(staff, **filters) -> set[str]:
    return set(_ids(staff.get(LEDGER, filters)))


# --- Filters --------------------------------------------------------------------

def test_the_status_filter_follows_the_verify_endpoints_states(staff):
    now = timezone.now()
    pending = _payment()
    paid = _payment(status="paid", max_calls=2, used_calls=1)
    exhausted = _payment(status="paid", max_calls=1, used_calls=1)
    expired_paid = _payment(status="paid", expires_at=now - timedelta(seconds=1))
    expired_pending = _payment(expires_at=now - timedelta(days=3))

    assert _shown(staff, status="pending") == {pending.pk}
    assert _shown(staff, status="paid") == {paid.pk}
    assert _shown(staff, status="exhausted") == {exhausted.pk}
    assert _shown(staff, status="expired") == {expired_paid.pk, expired_pending.pk}
    assert len(_shown(staff)) == 5
    assert [p.state() for p in (pending, paid, exhausted, expired_paid)] == ["pending", "paid", "exhausted", "expired"]


def test_the_service_filter_narrows_to_one_service(staff):
    face = _payment(service="face-search")
    _payment(service="celebrity-recognition")

    assert _shown(staff, service="face-search") == {face.pk}


def test_the_method_filter_tells_x402_balance_and_token_payments_apart(staff):
    per_call = _payment(method="x402", flow="x402_call", status="paid", used_calls=1)
    token_by_x402 = _payment(method="x402", status="paid")
    token_by_balance = _payment(method="balance", status="paid")
    token_unpaid = _payment()

    assert _shown(staff, method="x402") == {per_call.pk, token_by_x402.pk}
    assert _shown(staff, method="balance") == {token_by_balance.pk}
    assert _shown(staff, method="token") == {token_by_x402.pk, token_by_balance.pk, token_unpaid.pk}
    page = staff.get(LEDGER).content.decode()
    for summary in ("x402 (per call)", "token, paid with x402", "token, paid from balance", "token, unpaid"):
        assert summary in page


def test_the_client_filter_takes_a_client_id_or_a_label(staff):
    alice = api_key_create(label="Alice's agent").api_key
    bob = api_key_create(label="bob").api_key
    mine = {_payment(client=alice).pk, _payment(client=alice).pk}
    _payment(client=bob)
    _payment()

    assert _shown(staff, client=alice.client_id) == mine
    assert _shown(staff, client="alice's AGENT") == mine
    assert _shown(staff, client=bob.client_id, status="expired") == set()


def test_the_date_filter_takes_whole_utc_days_both_ends_included(staff):
    def on(day, hour):
        return _payment(created_at=datetime(2026, 3, day, hour, tzinfo=UTC))

    before, first, last, after = on(9, 23), on(10, 0), on(11, 23), on(12, 0)

    assert _shown(staff, created_from="2026-03-10", created_to="2026-03-11") == {first.pk, last.pk}
    assert _shown(staff, created_from="2026-03-12") == {after.pk}
    assert _shown(staff, created_to="2026-03-09") == {before.pk}


@pytest.mark.parametrize(("filters", "field", "message"), [
    ({"status": "refunded"}, "status", "Select a valid choice."),
    ({"service": "no-such-service"}, "service", "Select a valid choice."),
    ({"method": "cash"}, "method", "Select a valid choice."),
    ({"client": "key_000000000000"}, "client", "No API key has this client id or label."),
    ({"client": "x" * 201}, "client", "at most 200 characters"),
    ({"created_from": "2026-13-40"}, "created_from", "Enter a valid date."),
    ({"created_to": "yesterday"}, "created_to", "Enter a valid date."),
    ({"created_to": "9999-12-31"}, "created_to", "less than or equal to"),
    ({"created_from": "2026-03-02", "created_to": "2026-03-01"}, "created_to", "The end date is before the start"),
])
def test_a_bad_filter_is_shown_on_the_form_not_a_500(staff, filters, field, message):
    _payment()

    response = staff.get(LEDGER, filters)

    assert response.status_code == 200
    page = response.content.decode()
    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    assert errors and message in errors[1]
    assert "No payments shown until the filters are fixed." in page and not ROW.search(page)


@pytest.mark.parametrize("before", ["garbage", "2026-01-01T00:00:00+00:00,evil", "2026-01-01T00:00:00,pay_1",
                                    "2026-99-01T00:00:00+00:00,pay_1", ",", "0001-01-01T00:00:00+05:00,pay_1"])
def test_a_bad_page_link_is_shown_not_a_500(staff, before):
    response = staff.get(LEDGER, {"before": before})

    assert response.status_code == 200
    assert "This page link is not valid" in response.content.decode()


# --- Keyset pages ---------------------------------------------------------------

def _walk(staff, url):
    seen = []
    while url:
        page = staff.get(url).content.decode()
        seen += ROW.findall(page)
        older = re.search(r'<a href="([^"]+)" rel="next"', page)
        url = older[1].replace("&amp;", "&") if older else None
    return seen


def test_older_pages_follow_without_repeating_or_skipping_a_payment(staff):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    payments = [_payment(created_at=start + timedelta(minutes=index)) for index in range(90)]
    # Thirty at the very same instant, across a page boundary: the id breaks the tie.
    tied = [_payment(created_at=start + timedelta(minutes=45)) for _ in range(30)]

    seen = _walk(staff, LEDGER)

    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == {p.pk for p in payments + tied}
    order = list(Payment.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    assert seen == order


def test_older_pages_keep_the_filters(staff):
    for index in range(60):
        _payment(service="face-search" if index % 2 else "celebrity-recognition")

    seen = _walk(staff, f"{LEDGER}?service=face-search")

    assert len(seen) == len(set(seen)) == 30
    assert set(Payment.objects.filter(pk__in=seen).values_list("service_id", flat=True)) == {"face-search"}


def test_the_ledger_costs_the_same_queries_for_a_page_of_100_payments(staff, django_assert_num_queries):
    keys = [api_key_create(label=f"agent {index}").api_key for index in range(10)]
    for index in range(100):
        _payment(client=keys[index % 10] if index % 3 else None, method="balance" if index % 2 else "")

    # session, user, the service choices, the page (with its clients)
    with django_assert_num_queries(4):
        first = staff.get(LEDGER)
    # ... and one more to find the keys a client filter names
    with django_assert_num_queries(5):
        filtered = staff.get(LEDGER, {"client": keys[1].client_id, "method": "balance", "status": "pending"})

    assert len(_ids(first)) == 50 and 'rel="next"' in first.content.decode()
    assert len(_ids(filtered)) == Payment.objects.filter(client=keys[1], method="balance").count()


# --- htmx and access --------------------------------------------------------------

def test_htmx_gets_the_ledger_partial(staff):
    payment = _payment()

    response = staff.get(LEDGER, {"status": "pending"}, headers={"HX-Request": "true"})

    page = response.content.decode()
    assert page.lstrip().startswith('<section id="ledger">') and "<html" not in page
    assert payment.pk in page
    bad = staff.get(LEDGER, {"created_from": "nope"}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in bad
    # The form comes along out of band, its error by its field.
    assert re.search(r'<form [^>]*id="ledger-filters"[^>]*hx-swap-oob="true"', bad)
    assert re.search(r'<ul class="errorlist" id="id_created_from_error"><li>Enter a valid date.</li></ul>', bad)


def test_the_filter_form_works_as_a_plain_form_and_with_htmx(staff):
    page = staff.get(LEDGER).content.decode()

    form = re.search(r'<form method="get" action="/dashboard/payments/"[^>]*>', page)[0]
    assert 'hx-get="/dashboard/payments/"' in form and 'hx-target="#ledger"' in form
    assert 'hx-push-url="true"' in form and 'hx-trigger="change, submit"' in form


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    payment = _payment()

    for path in (f"{LEDGER}?status=paid", f"{LEDGER}{payment.pk}/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/?next=/dashboard/")


def test_anonymous_htmx_requests_are_told_to_load_the_login_page(client):
    response = client.get(LEDGER, headers={"HX-Request": "true"})

    assert response.status_code == 204 and response["HX-Redirect"].startswith("/dashboard/login/?next=")


def test_a_user_who_is_not_staff_can_read_the_ledger_and_a_payment(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="pw"))
    payment = _payment()

    assert client.get(LEDGER).status_code == client.get(f"{LEDGER}{payment.pk}/").status_code == 200
    assert client.post(LEDGER).status_code == 403


# --- A payment ------------------------------------------------------------------

def test_a_payment_page_shows_its_price_snapshot_calls_and_receipts_never_its_token(
        staff, api, upstream_emulator, x402_payer):
    challenge = api.post("/api/tools/celebrity-recognition", json.dumps({"ImageURL": "https://example.com/f.jpg"}),
                         content_type="application/json")
    paid = api.post("/api/tools/celebrity-recognition", json.dumps({"ImageURL": "https://example.com/f.jpg"}),
                    content_type="application/json",
                    HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge["PAYMENT-REQUIRED"]))
    assert paid.status_code == 200
    receipt = X402Authorization.objects.get()
    payment, call = receipt.payment, ToolCall.objects.get()

    response = staff.get(f"{LEDGER}{payment.pk}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert payment.flow == "x402_call" and "x402 (per call)" in page
    assert "never alters a payment" in page and "0.20 USD (20 cents)" in page and "settle_first" in page
    assert call.upstream_request_id and call.upstream_request_id in page and "Succeeded" in page
    for value in (receipt.payer, receipt.nonce, receipt.transaction, receipt.network):
        assert value in page
    token = credentials.payment_token(payment.pk)
    assert token not in page and token.split(".")[1] not in page
    assert _shown(staff, method="x402") == {payment.pk}


def test_a_token_payment_page_shows_its_calls_and_not_its_token(staff, api, upstream_emulator, make_key, paid_token):
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    # The failed call gives its call back, so the one-call token still pays for the second.
    for url in ("https://sandbox.invalid/error/InternalError", "https://example.com/f.jpg"):
        api.post("/api/tools/celebrity-recognition", json.dumps({"ImageURL": url}), content_type="application/json",
                 HTTP_X_API_KEY=secret, HTTP_X_PAYMENT_TOKEN=token)

    page = staff.get(f"{LEDGER}{payment.pk}/").content.decode()

    assert token not in page and token.split(".")[1] not in page
    calls = re.search(r'<table id="payment-calls">(.*?)</table>', page, re.S)[1]
    assert calls.count("<tr><td>") == 2 and "InternalError" in calls
    assert "No x402 authorization was presented" in page
    assert "token, paid from balance" in page and key.client_id in page
    assert _shown(staff, method="token", client=key.client_id) == {payment.pk}


def test_a_payment_page_costs_the_same_queries_for_many_calls(staff, django_assert_num_queries):
    payment = _payment(status="paid", max_calls=50, used_calls=50,
                       client=api_key_create(label="agent").api_key)
    ToolCall.objects.bulk_create([ToolCall(service_id=payment.service_id, payment=payment, payment_method="token",
                                           outcome="succeeded", amount_cents=1) for _ in range(50)])

    # session, user, the payment with its client and policy, its calls, its receipts
    with django_assert_num_queries(5):
        response = staff.get(f"{LEDGER}{payment.pk}/")

    assert response.content.decode().count("Succeeded") == 50


def test_an_unknown_payment_is_404(staff):
    assert staff.get(f"{LEDGER}pay_nothing/").status_code == 404


# --- Payment.flow -----------------------------------------------------------------

def test_the_migration_marks_payments_made_by_an_x402_call():
    per_call, token = _payment(), _payment()
    ToolCall.objects.create(service_id=per_call.service_id, payment=per_call, payment_method="x402")
    ToolCall.objects.create(service_id=token.service_id, payment=token, payment_method="token")
    migration = importlib.import_module("payments.migrations.0004_dashboard_audit_and_ledger")

    migration.payments_flow_backfill(django_apps, None)

    assert Payment.objects.get(pk=per_call.pk).flow == "x402_call"
    assert Payment.objects.get(pk=token.pk).flow == "token"

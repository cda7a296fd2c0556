"""The API keys pages of the dashboard: create (secret shown once), edit, top up, revoke, rotate, usage, audit."""

import re
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from catalog.models import Service
from payments.models import ApiKey, ApiKeyEvent, Payment, ToolCall
from payments.selectors import ApiKeyRejected, api_key_authenticate, api_key_usage
from payments.services import api_key_create, api_key_revoke, api_key_top_up, payment_create
from tests.conftest import run_concurrently

pytestmark = pytest.mark.django_db

KEYS = "/dashboard/keys/"
SECRET = re.compile(r"s402_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def viewer(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="pw", is_staff=False))
    return client


@pytest.fixture
def key(operator):
    return api_key_create(label="agent", actor=operator).api_key


def _settings(**overrides):
    data = {"label": "agent", "access": "all", "rate_limit_per_minute": "", "daily_quota": ""}
    data.update(overrides)
    return data


def _secret_in(response) -> str:
    return SECRET.search(response.content.decode())[0]


def _error_next_to(response, field: str, message: str) -> None:
    """The message is in the error list Django ties to the field (aria-describedby), not elsewhere."""
    page = response.content.decode()
    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    assert errors, f"no error list for {field}"
    assert message in errors[1]


def _snapshot():
    return list(ApiKey.objects.order_by("pk").values()), ApiKeyEvent.objects.count()


# --- Create: the secret is shown once -------------------------------------------

def test_creating_a_key_shows_its_secret_once_and_the_secret_authenticates(staff, operator):
    response = staff.post(KEYS, _settings(label="ci agent", opening_balance="2.50"))

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = _secret_in(response)
    assert f'<div class="secret"><code>{secret}</code>' in response.content.decode()
    key = api_key_authenticate(secret)
    assert (key.label, key.balance_cents, key.created_by, key.allow_all_services) == ("ci agent", 250, operator, True)
    assert secret not in str(dict(staff.session.items()))
    listing = staff.get(KEYS).content.decode()
    assert key.client_id in listing and secret not in listing and key.secret_hash not in listing
    assert secret not in staff.get(f"{KEYS}{key.pk}/").content.decode()


def test_the_creation_is_the_first_audit_entry_with_who_and_the_first_settings(staff, operator):
    staff.post(KEYS, _settings(label="limited", access="listed", services=["celebrity-recognition", "face-search"],
                               rate_limit_per_minute="5", daily_quota="100"))

    key = ApiKey.objects.get()
    assert not key.allow_all_services
    assert sorted(key.allowed_services.values_list("pk", flat=True)) == ["celebrity-recognition", "face-search"]
    event = key.events.get()
    assert (event.action, event.actor, event.actor_name) == ("created", operator, "op")
    assert event.changes == {"label": "limited", "allowed_services": ["celebrity-recognition", "face-search"],
                             "rate_limit_per_minute": 5, "daily_quota": 100, "balance_cents": 0}
    assert key.secret_hash not in str(event.changes) and key.prefix not in str(event.changes)


def test_the_management_command_writes_an_audit_entry_without_an_actor():
    out = StringIO()
    call_command("create_api_key", "--label", "shell", "--balance-cents", "10", stdout=out, stderr=StringIO())

    event = api_key_authenticate(out.getvalue().strip()).events.get()
    assert (event.action, event.actor, event.actor_name, event.changes["balance_cents"]) == ("created", None, "", 10)


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"label": ""}, "label", "This field is required."),
    ({"label": "   "}, "label", "This field is required."),
    ({"label": "x" * 201}, "label", "at most 200 characters"),
    ({"rate_limit_per_minute": "abc"}, "rate_limit_per_minute", "Enter a whole number."),
    ({"rate_limit_per_minute": "-1"}, "rate_limit_per_minute", "greater than or equal to 1"),
    ({"rate_limit_per_minute": "0"}, "rate_limit_per_minute", "greater than or equal to 1"),
    ({"rate_limit_per_minute": "1.5"}, "rate_limit_per_minute", "Enter a whole number."),
    ({"rate_limit_per_minute": "100001"}, "rate_limit_per_minute", "less than or equal to 100000"),
    ({"daily_quota": "abc"}, "daily_quota", "Enter a whole number."),
    ({"daily_quota": "-5"}, "daily_quota", "greater than or equal to 1"),
    ({"daily_quota": "99999999999"}, "daily_quota", "less than or equal to 100000000"),
    ({"access": "listed", "services": ["no-such-service"]}, "services", "Unknown service: no-such-service."),
    ({"access": "listed"}, "services", "Select at least one service"),
    ({"access": "some"}, "access", "Select a valid choice."),
    ({"opening_balance": "-5"}, "opening_balance", "Enter an amount greater than zero."),
    ({"opening_balance": "abc"}, "opening_balance", "Enter a number."),
    ({"opening_balance": "1.001"}, "opening_balance", "no more than 2 decimal places"),
    ({"opening_balance": "100000.01"}, "opening_balance", "at most 100,000 USD"),
])
def test_it_refuses_a_bad_new_key_with_the_error_next_to_the_field_and_creates_nothing(staff, data, field, message):
    before = _snapshot()

    response = staff.post(KEYS, _settings(**data))

    assert response.status_code == 400
    _error_next_to(response, field, message)
    assert not SECRET.search(response.content.decode())
    assert _snapshot() == before == ([], 0)


# --- Edit ----------------------------------------------------------------------

def test_saving_settings_changes_the_key_and_logs_only_what_changed(staff, operator, key):
    response = staff.post(f"{KEYS}{key.pk}/", _settings(label="agent", access="listed",
                                                        services=["face-search"], daily_quota="50"))

    assert response.status_code == 302 and response["Location"] == f"{KEYS}{key.pk}/"
    key.refresh_from_db()
    assert (key.allow_all_services, key.daily_quota, key.rate_limit_per_minute) == (False, 50, None)
    assert list(key.allowed_services.values_list("pk", flat=True)) == ["face-search"]
    event = key.events.filter(action="updated").get()
    assert event.actor == operator
    assert event.changes == {"allowed_services": ["every service", ["face-search"]], "daily_quota": [None, 50]}
    page = staff.get(f"{KEYS}{key.pk}/").content.decode()
    assert "Settings saved." in page
    assert "allow-list: every service → face-search" in page and "daily quota: none → 50" in page


def test_allowing_every_service_again_clears_the_allow_list(staff, operator):
    key = api_key_create(label="agent", allowed_services=[Service.objects.get(pk="face-search")]).api_key

    staff.post(f"{KEYS}{key.pk}/", _settings(access="all", services=["face-search"]))

    key.refresh_from_db()
    assert key.allow_all_services and not key.allowed_services.exists()
    assert key.events.get(action="updated").changes == {"allowed_services": [["face-search"], "every service"]}


def test_saving_unchanged_settings_writes_no_audit_entry(staff, key):
    staff.post(f"{KEYS}{key.pk}/", _settings())

    assert list(key.events.values_list("action", flat=True)) == ["created"]


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"label": ""}, "label", "This field is required."),
    ({"daily_quota": "abc"}, "daily_quota", "Enter a whole number."),
    ({"rate_limit_per_minute": "-3"}, "rate_limit_per_minute", "greater than or equal to 1"),
    ({"access": "listed", "services": ["face-search", "nope"]}, "services", "Unknown service: nope."),
])
def test_it_refuses_bad_settings_with_the_error_next_to_the_field_and_saves_nothing(staff, key, data, field,
                                                                                    message):
    before = _snapshot()

    response = staff.post(f"{KEYS}{key.pk}/", _settings(**data))

    assert response.status_code == 400
    _error_next_to(response, field, message)
    assert _snapshot() == before


# --- Top up ---------------------------------------------------------------------

def test_topping_up_adds_dollars_as_cents_and_logs_the_amount(staff, operator, key):
    response = staff.post(f"{KEYS}{key.pk}/top-up/", {"amount": "5.25"}, follow=True)

    key.refresh_from_db()
    assert key.balance_cents == 525
    event = key.events.get(action="topped_up")
    assert (event.actor, event.changes) == (operator, {"amount_cents": 525, "balance_cents": [0, 525]})
    page = response.content.decode()
    assert "Added 5.25 USD; the balance is 5.25 USD." in page
    assert "amount: 5.25 USD" in page and "balance: 0.00 USD → 5.25 USD" in page


@pytest.mark.parametrize(("amount", "message"), [
    ("-5", "Enter an amount greater than zero."),
    ("0", "Enter an amount greater than zero."),
    ("0.00", "Enter an amount greater than zero."),
    ("abc", "Enter a number."),
    ("NaN", "Enter a number."),
    ("1.234", "no more than 2 decimal places"),
    ("100000.01", "at most 100,000 USD"),
    ("1e9", "at most 100,000 USD"),
    ("", "This field is required."),
])
def test_it_refuses_a_bad_top_up_with_the_error_next_to_the_field(staff, key, amount, message):
    before = _snapshot()

    response = staff.post(f"{KEYS}{key.pk}/top-up/", {"amount": amount})

    assert response.status_code == 400
    _error_next_to(response, "amount", message)
    assert _snapshot() == before


def test_a_revoked_key_cannot_be_topped_up_or_rotated(staff, key):
    api_key_revoke(api_key=key)
    before = _snapshot()

    top_up = staff.post(f"{KEYS}{key.pk}/top-up/", {"amount": "5"})
    rotate = staff.post(f"{KEYS}{key.pk}/rotate/")

    assert top_up.status_code == rotate.status_code == 400
    assert "a revoked key cannot be topped up" in top_up.content.decode()
    assert "a revoked key cannot be rotated" in rotate.content.decode()
    assert not SECRET.search(rotate.content.decode())
    assert _snapshot() == before


# --- Revoke and rotate ----------------------------------------------------------

def test_revoking_stops_the_key_at_once_and_is_logged(staff, operator):
    created = api_key_create(label="agent")

    response = staff.post(f"{KEYS}{created.api_key.pk}/revoke/", follow=True)

    with pytest.raises(ApiKeyRejected, match="revoked"):
        api_key_authenticate(created.secret)
    event = created.api_key.events.get(action="revoked")
    assert (event.actor, event.changes) == (operator, {"status": ["active", "revoked"]})
    assert "is revoked: requests with it now get 401" in response.content.decode()
    staff.post(f"{KEYS}{created.api_key.pk}/revoke/")
    assert created.api_key.events.filter(action="revoked").count() == 1


def test_rotating_replaces_the_secret_shown_once_and_keeps_the_client_id(staff, operator):
    created = api_key_create(label="agent", balance_cents=70)

    response = staff.post(f"{KEYS}{created.api_key.pk}/rotate/")

    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    new_secret = _secret_in(response)
    assert new_secret != created.secret
    with pytest.raises(ApiKeyRejected):
        api_key_authenticate(created.secret)
    rotated = api_key_authenticate(new_secret)
    assert (rotated.pk, rotated.client_id, rotated.balance_cents) == (created.api_key.pk, created.api_key.client_id, 70)
    event = rotated.events.get(action="rotated")
    assert (event.actor, event.changes) == (operator, {})
    assert new_secret not in staff.get(f"{KEYS}{rotated.pk}/").content.decode()
    assert new_secret not in str(dict(staff.session.items()))


def test_write_endpoints_refuse_get(staff, key):
    for action in ("top-up", "revoke", "rotate"):
        assert staff.get(f"{KEYS}{key.pk}/{action}/").status_code == 405


def test_an_unknown_key_is_404(staff):
    assert staff.get(f"{KEYS}999999/").status_code == 404
    assert staff.post(f"{KEYS}999999/top-up/", {"amount": "5"}).status_code == 404


# --- Usage per day --------------------------------------------------------------

def _call(key, started_at, outcome="succeeded", amount_cents=20, service_id="celebrity-recognition"):
    return ToolCall.objects.create(service_id=service_id, api_key=key, client_id=key.client_id, payment_method="token",
                                   outcome=outcome, amount_cents=amount_cents, started_at=started_at)


def test_usage_per_day_counts_calls_by_outcome_and_what_they_charged(staff, key):
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=1, microsecond=0)
    yesterday = today - timedelta(days=1)
    for started in (today, today, yesterday):
        _call(key, started)
    _call(key, today, outcome="upstream_error", amount_cents=0)
    _call(key, yesterday + timedelta(hours=23, minutes=59), outcome="timeout", amount_cents=0)
    _call(key, today - timedelta(days=30), amount_cents=999)  # outside the 30 UTC days
    _call(api_key_create(label="other").api_key, today, amount_cents=500)  # another key

    usage = api_key_usage(key, now=now)

    assert [(d.day, d.calls, d.charged_cents, d.by_outcome) for d in usage.days] == [
        (today.date(), 3, 40, {"succeeded": 2, "upstream_error": 1}),
        (yesterday.date(), 2, 20, {"succeeded": 1, "timeout": 1}),
    ]
    assert [value for value, _ in usage.outcomes] == ["succeeded", "upstream_error", "timeout"]
    assert (usage.total.calls, usage.total.charged_cents, usage.total.outcome_counts) == (5, 60, [3, 1, 1])
    page = staff.get(f"{KEYS}{key.pk}/").content.decode()
    row = re.search(rf'<tr data-day="{today:%Y-%m-%d}">(.*?)</tr>', page, re.S)[1]
    assert re.findall(r'<td class="num">([^<]*)</td>', row) == ["3", "2", "1", "0", "0.40"]
    total = re.search(r'<tr data-day="total">(.*?)</tr>', page, re.S)[1]
    assert re.findall(r'<th class="num">([^<]*)</th>', total) == ["5", "3", "1", "1", "0.60"]


# --- Who may do what ------------------------------------------------------------

WRITES = [("", _settings()), ("top-up/", {"amount": "5"}), ("revoke/", {}), ("rotate/", {})]


@pytest.mark.parametrize(("action", "data"), WRITES)
def test_a_user_who_is_not_staff_gets_403_on_every_write(viewer, key, action, data):
    before = _snapshot()

    assert viewer.post(f"{KEYS}{key.pk}/{action}", data).status_code == 403
    assert _snapshot() == before


def test_a_user_who_is_not_staff_cannot_create_a_key_but_can_read(viewer, key):
    assert viewer.post(KEYS, _settings(label="sneaky")).status_code == 403
    assert not ApiKey.objects.filter(label="sneaky").exists()
    listing = viewer.get(KEYS)
    detail = viewer.get(f"{KEYS}{key.pk}/")
    assert listing.status_code == detail.status_code == 200
    assert key.client_id in listing.content.decode()
    assert 'id="create-key"' not in listing.content.decode()
    assert 'id="key-top-up"' not in detail.content.decode() and "Read-only" in detail.content.decode()


@pytest.mark.parametrize("path", [KEYS, f"{KEYS}1/"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/login/?next={path}"


@pytest.mark.parametrize(("action", "data"), [*WRITES, ("new", _settings())])
def test_anonymous_writes_are_sent_to_the_login_page_and_change_nothing(client, key, action, data):
    path = KEYS if action == "new" else f"{KEYS}{key.pk}/{action}"
    before = _snapshot()

    response = client.post(path, data)

    assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/?next=")
    assert _snapshot() == before


def test_writes_need_the_csrf_token(operator, key):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)

    assert strict.post(f"{KEYS}{key.pk}/top-up/", {"amount": "5"}).status_code == 403
    assert strict.post(KEYS, _settings(label="x")).status_code == 403
    key.refresh_from_db()
    assert key.balance_cents == 0 and ApiKey.objects.count() == 1


# --- htmx -----------------------------------------------------------------------

def test_htmx_gets_the_partial_of_the_same_templates(staff, key):
    listing = staff.get(KEYS, headers={"HX-Request": "true"}).content.decode()
    detail = staff.get(f"{KEYS}{key.pk}/", headers={"HX-Request": "true"}).content.decode()

    assert listing.lstrip().startswith('<div id="keys">') and "<html" not in listing
    assert detail.lstrip().startswith('<div id="key">') and "<html" not in detail
    assert key.client_id in listing and 'id="audit-log"' in detail


def test_htmx_writes_answer_with_the_fresh_partial_and_refusals_are_swappable(staff, key):
    done = staff.post(f"{KEYS}{key.pk}/top-up/", {"amount": "3"}, headers={"HX-Request": "true"})
    refused = staff.post(f"{KEYS}{key.pk}/top-up/", {"amount": "-3"}, headers={"HX-Request": "true"})
    created = staff.post(KEYS, _settings(label="htmx"), headers={"HX-Request": "true"})

    assert done.status_code == 200 and "<html" not in done.content.decode()
    assert "Added 3.00 USD; the balance is 3.00 USD." in done.content.decode()
    assert refused.status_code == 400  # base.html's htmx-config swaps 4xx answers
    _error_next_to(refused, "amount", "greater than zero")
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    assert api_key_authenticate(_secret_in(created)).label == "htmx"


# --- Lists stay cheap -----------------------------------------------------------

def test_the_keys_list_costs_the_same_queries_for_30_keys(staff, operator, django_assert_num_queries):
    services = list(Service.objects.order_by("pk")[:4])
    for index in range(30):
        api_key_create(label=f"agent {index}", allowed_services=services[: index % 4],
                       actor=operator if index % 2 else None)

    # session, user, keys with their creator, their allow-lists, the form's services
    with django_assert_num_queries(5):
        response = staff.get(KEYS)

    assert response.content.decode().count('<tr data-key="key_') == 30


def test_the_keys_list_pages_by_creation_time_without_repeating_a_key(staff):
    keys = [api_key_create(label=f"agent {index}").api_key for index in range(105)]
    same_moment = keys[0].created_at
    ApiKey.objects.filter(pk__in=[k.pk for k in keys[40:70]]).update(created_at=same_moment)

    seen, url = [], KEYS
    while url:
        page = staff.get(url).content.decode()
        seen += re.findall(r'<tr data-key="(key_[0-9a-f]+)">', page)
        older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page)
        url = older[1].replace("&amp;", "&") if older else None

    assert len(seen) == len(set(seen)) == 105


def test_a_malformed_keys_page_link_is_shown_not_a_500(staff, key):
    response = staff.get(KEYS, {"before": "yesterday,1"})

    assert response.status_code == 200
    assert "This page link is not valid" in response.content.decode()


def test_the_key_page_costs_the_same_queries_with_many_payments_calls_and_entries(staff, operator, key,
                                                                                  django_assert_num_queries):
    service = Service.objects.get(pk="celebrity-recognition")
    for _ in range(30):
        payment_create(service=service, client=key)
        api_key_top_up(api_key=key, amount_cents=10, actor=operator)
    now = datetime.now(UTC)
    for day in range(40):
        _call(key, now - timedelta(days=day), outcome=["succeeded", "timeout", "client_error"][day % 3])

    # session, user, the key with its creator, its allow-list, the form's services, usage, payments, audit log,
    # jobs, jobs by status
    with django_assert_num_queries(10):
        response = staff.get(f"{KEYS}{key.pk}/")

    page = response.content.decode()
    assert page.count('<a href="/dashboard/payments/pay_') == 20
    assert page.count('<tr data-action="topped_up">') == 30
    assert Payment.objects.filter(client=key).count() == 30


# --- Admin ----------------------------------------------------------------------

def test_the_admin_shows_the_audit_log_and_cannot_change_a_key(client, django_user_model, key):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))

    page = client.get(f"/admin/payments/apikey/{key.pk}/change/")
    client.post(f"/admin/payments/apikey/{key.pk}/change/", {"label": "renamed", "balance_cents": "100000"})

    assert page.status_code == 200 and "created" in page.content.decode()
    key.refresh_from_db()
    assert (key.label, key.balance_cents) == ("agent", 0)
    assert client.get("/admin/payments/apikeyevent/").status_code == 200


# --- Concurrency ----------------------------------------------------------------

def test_concurrent_top_ups_each_log_the_balance_they_really_moved(committed_db, postgresql_only, operator):
    key = api_key_create(label="racer").api_key

    run_concurrently(lambda _: api_key_top_up(api_key=ApiKey.objects.get(pk=key.pk), amount_cents=1, actor=operator),
                     8)

    key.refresh_from_db()
    steps = sorted(tuple(e.changes["balance_cents"]) for e in key.events.filter(action="topped_up"))
    assert key.balance_cents == 8
    assert steps == [(n, n + 1) for n in range(8)]

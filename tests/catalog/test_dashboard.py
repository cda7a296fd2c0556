"""The services and pricing pages of the dashboard: search, filters, edits, and the refusals of bad input."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import PricingPolicy, Service
from health.models import HealthRun, ServiceHealth
from health.services import service_stats_record
from payments.models import Payment, ToolCall
from payments.services import payment_create

pytestmark = pytest.mark.django_db

SERVICE_URL = "/dashboard/services/celebrity-recognition/"


def edit(**changes):
    service = Service.objects.get(id="celebrity-recognition")
    data = {"name": service.name, "description": service.description, "keywords": ", ".join(service.keywords),
            "description_for_model": service.description_for_model, "state": service.state,
            "enabled": "on" if service.enabled else "", "pricing_policy": service.pricing_policy_id}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def rows(response) -> list[str]:
    page = response.content.decode()
    return [part.split('"')[0] for part in page.split('<tr data-service="')[1:]]


# --- The services table ----------------------------------------------------------


def test_the_table_lists_every_service_with_health_quality_latency_and_price(staff):
    service = Service.objects.get(id="celebrity-recognition")
    now = timezone.now()
    for hours_ago, latency_ms in ((0, 120), (1, 300), (5, 90)):
        service_stats_record(service=service, source="check", outcome="healthy", latency_ms=latency_ms,
                             at=now - timedelta(hours=hours_ago))
    ServiceHealth.objects.create(service=service, status="healthy", checked_at=now, latency_ms=120,
                                 recent=[["healthy", 120]])

    response = staff.get("/dashboard/services/")
    page = response.content.decode()

    assert len(rows(response)) == Service.objects.count() == 62
    row = page.split('<tr data-service="celebrity-recognition">')[1].split("</tr>\n")[0]
    assert '<span class="health health-healthy"' in row
    assert "availability" in row and "freshness" in row  # the score's parts, behind its <details>
    assert '<svg class="sparkline"' in row and "ms</title>" in row
    assert "USD 0.20" in row


def test_search_narrows_the_table_and_htmx_gets_only_the_table(staff):
    full = staff.get("/dashboard/services/?q=celebrity")
    partial = staff.get("/dashboard/services/?q=celebrity", headers={"HX-Request": "true"})

    assert rows(full) == ["celebrity-recognition"]
    assert rows(partial) == ["celebrity-recognition"]
    assert b"<html" not in partial.content and partial.content.lstrip().startswith(b'<section id="services-results">')


def test_search_matches_keywords_and_every_word(staff):
    Service.objects.filter(id="face-detection").update(keywords=["zebra-crossing"])

    assert rows(staff.get("/dashboard/services/?q=ZEBRA")) == ["face-detection"]
    assert rows(staff.get("/dashboard/services/?q=face zebra")) == ["face-detection"]
    assert rows(staff.get("/dashboard/services/?q=nothing-like-this")) == []


def test_filters_narrow_by_category_state_and_health(staff):
    Service.objects.filter(id="face-detection").update(state="draft")
    ServiceHealth.objects.create(service_id="scene-recognition", status="unhealthy", checked_at=timezone.now())

    assert rows(staff.get("/dashboard/services/?state=draft")) == ["face-detection"]
    assert rows(staff.get("/dashboard/services/?health=unhealthy")) == ["scene-recognition"]
    by_category = rows(staff.get("/dashboard/services/?category=image-recognition"))
    assert by_category and set(by_category) == set(
        Service.objects.filter(category="image-recognition").values_list("id", flat=True))
    assert len(rows(staff.get("/dashboard/services/?health=unknown"))) == 61


@pytest.mark.parametrize("query", ["state=bogus", "health=sick", "category=no-such-category", "q=" + "x" * 201])
def test_a_malformed_filter_is_named_and_answered_400_not_500(staff, query):
    response = staff.get(f"/dashboard/services/?{query}")

    assert response.status_code == 400
    assert b'class="errorlist"' in response.content
    assert len(rows(response)) == 62  # the filter is dropped, not guessed


def test_the_services_page_costs_the_same_queries_whatever_the_history(
        staff, django_assert_num_queries, clear_of_the_hour_turn):
    now = timezone.now()
    services = list(Service.objects.all())
    for hours_ago in range(0, 48, 3):
        for service in services[:20]:
            service_stats_record(service=service, source="call", outcome="succeeded", latency_ms=100 + hours_ago,
                                 at=now - timedelta(hours=hours_ago), amount_cents=20)

    # session, user, categories, services, ServiceHealth, 24-hour stats and sparkline stats (closed hours, then
    # the current one); the closed hours' sums are cached until the hour turns.
    with django_assert_num_queries(9):
        assert staff.get("/dashboard/services/").status_code == 200
    with django_assert_num_queries(7):
        assert staff.get("/dashboard/services/").status_code == 200


# --- A service's page ----------------------------------------------------------------


def test_the_service_page_shows_definition_schemas_health_history_and_recent_calls(staff):
    service = Service.objects.get(id="celebrity-recognition")
    ToolCall.objects.create(service=service, payment_method="token", outcome="upstream_error", http_status=502,
                            upstream_code="InternalError", error="the upstream failed", latency_ms=80)

    page = staff.get(SERVICE_URL).content.decode()

    assert 'id="service-form"' in page and 'name="description_for_model"' in page
    assert "ImageURL" in page.split("<h2>Input schema</h2>")[1]
    assert "InternalError" in page.split('id="recent-calls"')[1]
    assert "No checks yet." in page


def test_an_operator_edits_a_service_and_the_catalog_sees_it(staff, api):
    response = staff.post(SERVICE_URL, edit(name="Famous Faces", keywords="stars, actors", enabled=""))

    assert (response.status_code, response["Location"]) == (302, SERVICE_URL)
    service = Service.objects.get(id="celebrity-recognition")
    assert (service.name, service.keywords, service.enabled) == ("Famous Faces", ["stars", "actors"], False)
    assert "Saved name, keywords, enabled." in staff.get(SERVICE_URL).content.decode()
    found = api.get("/api/catalog/search", {"q": "celebrity", "limit": 50}).json()["services"]
    assert "celebrity-recognition" not in [entry["serviceId"] for entry in found]


def test_moving_a_service_to_another_policy_changes_its_price(staff):
    PricingPolicy.objects.create(id="premium", amount_cents=150)

    staff.post(SERVICE_URL, edit(pricing_policy="premium"))

    assert Service.objects.get(id="celebrity-recognition").pricing_policy_id == "premium"
    assert "USD 1.50" in staff.get("/dashboard/services/?q=celebrity").content.decode()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "", "This field is required."),
    ("name", "n" * 201, "Ensure this value has at most 200 characters"),
    ("description", "d" * 2001, "Ensure this value has at most 2000 characters"),
    ("description_for_model", "", "This field is required."),
    ("keywords", "k" * 61, "Keywords are at most 60 characters"),
    ("keywords", ",".join(f"k{i}" for i in range(51)), "At most 50 keywords"),
    ("state", "gone", "Select a valid choice."),
    ("pricing_policy", "no-such-policy", "Select a valid choice."),
])
def test_a_bad_edit_is_refused_with_the_error_beside_its_field_and_nothing_saved(staff, field, value, message):
    before = Service.objects.filter(id="celebrity-recognition").values().get()

    response = staff.post(SERVICE_URL, edit(**{field: value}))

    assert response.status_code == 400
    page = response.content.decode()
    beside = page.split(f'id="id_{field}_error"')[1].split("</ul>")[0]
    assert message in beside
    assert Service.objects.filter(id="celebrity-recognition").values().get() == before


def test_an_unknown_service_page_is_404(staff):
    assert staff.get("/dashboard/services/no-such-service/").status_code == 404
    assert staff.post("/dashboard/services/no-such-service/check/").status_code == 404


# --- Pricing policies ------------------------------------------------------------------


def test_the_pricing_list_shows_each_policy_and_the_services_using_it(staff):
    page = staff.get("/dashboard/pricing/").content.decode()

    row = page.split('<tr data-policy="aliyun-viapi">')[1].split("</tr>")[0]
    assert "USD 0.20" in row and f"{Service.objects.filter(pricing_policy_id='aliyun-viapi').count()} services" in row


def test_an_operator_creates_a_policy(staff):
    response = staff.post("/dashboard/pricing/new/", {
        "id": "bulk-10", "name": "Ten calls", "price": "1.50", "max_calls": "10", "settle_mode": "settle_first",
        "bind_client": "on"})

    assert response.status_code == 302 and response["Location"] == "/dashboard/pricing/bulk-10/"
    policy = PricingPolicy.objects.get(id="bulk-10")
    assert (policy.amount_cents, policy.max_calls, policy.bind_client, policy.allow_reuse) == (150, 10, True, False)


def test_editing_a_policy_never_changes_an_existing_payment(staff):
    service = Service.objects.get(id="celebrity-recognition")
    payment = payment_create(service=service)

    response = staff.post("/dashboard/pricing/aliyun-viapi/", {
        "name": "VIAPI", "price": "0.35", "max_calls": "2", "settle_mode": "settle_after"})

    assert response.status_code == 302
    assert PricingPolicy.objects.get(id="aliyun-viapi").amount_cents == 35
    payment.refresh_from_db()
    assert (payment.amount_cents, payment.max_calls, payment.settle_mode) == (20, 1, "settle_first")
    page = staff.get("/dashboard/pricing/aliyun-viapi/").content.decode()
    assert "1 payment was made under this policy" in page and "new payments only" in page
    assert "existing payments keep their price" in page
    later = payment_create(service=Service.objects.get(id="celebrity-recognition"))
    assert (later.amount_cents, later.max_calls, later.settle_mode) == (35, 2, "settle_after")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("price", "-5", "Ensure this value is greater than or equal to 0.01."),
    ("price", "abc", "Enter a number."),
    ("price", "0.001", "Ensure that there are no more than 2 decimal places."),
    ("price", "", "This field is required."),
    ("max_calls", "0", "Ensure this value is greater than or equal to 1."),
    ("max_calls", "abc", "Enter a whole number."),
    ("max_calls", "10001", "Ensure this value is less than or equal to 10000."),
    ("id", "", "This field is required."),
    ("id", "has spaces", "Enter a valid “slug”"),
    ("id", "aliyun-viapi", "Pricing policy with this Id already exists."),
    ("name", "n" * 201, "Ensure this value has at most 200 characters"),
    ("settle_mode", "whenever", "Select a valid choice."),
])
def test_a_bad_policy_is_refused_with_the_error_beside_its_field_and_nothing_saved(staff, field, value, message):
    data = {"id": "new-policy", "name": "", "price": "0.10", "max_calls": "1", "settle_mode": "settle_first"}
    data[field] = value
    before = list(PricingPolicy.objects.values())

    response = staff.post("/dashboard/pricing/new/", data)

    assert response.status_code == 400
    assert message in response.content.decode().split(f'id="id_{field}_error"')[1].split("</ul>")[0]
    assert list(PricingPolicy.objects.values()) == before


def test_a_bad_policy_edit_changes_nothing(staff):
    before = PricingPolicy.objects.filter(id="aliyun-viapi").values().get()

    response = staff.post("/dashboard/pricing/aliyun-viapi/", {"price": "-5", "max_calls": "1",
                                                               "settle_mode": "settle_first"})

    assert response.status_code == 400 and "id_price_error" in response.content.decode()
    assert PricingPolicy.objects.filter(id="aliyun-viapi").values().get() == before
    assert not Payment.objects.exists() and not HealthRun.objects.exists()

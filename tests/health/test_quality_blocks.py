"""Seed 001's quality block from stored checks and calls: in the catalog, on service pages, at a fixed cost."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.models import Service
from catalog.selectors import catalog_search
from health import latency, services
from health.models import ServiceStatsHour
from health.probes import CheckOutcome
from health.selectors import quality_blocks

pytestmark = pytest.mark.django_db

SEED_KEYS = ["qualityScore", "healthStatus", "healthCheckedAt", "healthLatencyMs", "latencyMs", "successRate",
             "callCount", "executionCount", "successCount", "errorCount", "paymentRequireds"]


def block(service_id="celebrity-recognition", **options):
    return quality_blocks([Service.objects.get(id=service_id)], **options)[service_id]


def call(api, *, token=None, secret=None, image="https://example.com/face.jpg"):
    headers = {}
    if token:
        headers["HTTP_X_PAYMENT_TOKEN"] = token
    if secret:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return api.post("/api/tools/celebrity-recognition", {"ImageURL": image}, format="json", **headers)


def test_a_service_never_checked_or_called_says_so_instead_of_guessing():
    quality = block()

    assert list(quality)[:11] == SEED_KEYS
    assert quality["qualityScore"] is None and quality["healthStatus"] == "unknown"
    assert quality["healthCheckedAt"] is None and quality["latencyMs"] is None and quality["successRate"] is None
    assert [quality[key] for key in SEED_KEYS[6:]] == [0, 0, 0, 0, 0]
    assert quality["qualityNote"] == "not checked yet: no score until a health check has answered"
    assert [part["name"] for part in quality["qualityParts"]] == ["availability", "latency", "freshness", "success"]


def test_the_block_counts_real_calls_and_402s_and_scores_them(api, upstream_emulator, make_key, paid_token):
    services.health_run_execute(run_id=services.health_run_start(
        trigger="command", service_ids=["celebrity-recognition"], enqueue=False).pk)
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key, max_calls=3)
    assert call(api).status_code == 402
    assert call(api, token=token, secret=secret).status_code == 200
    assert call(api, token=token, secret=secret).status_code == 200
    refused = call(api, token=token, secret=secret, image="https://sandbox.invalid/error/InvalidImage.Download")
    assert refused.status_code == 400

    quality = block()

    assert quality["healthStatus"] == "healthy" and quality["healthCheckedAt"].endswith("Z")
    assert (quality["callCount"], quality["executionCount"], quality["successCount"], quality["errorCount"],
            quality["paymentRequireds"]) == (4, 3, 2, 0, 1)
    # The caller's bad image is neither a success nor the service's failure.
    assert quality["successRate"] == 1.0
    assert quality["p50LatencyMs"] is not None and quality["p95LatencyMs"] >= quality["p50LatencyMs"]
    assert quality["latencyMs"] == quality["p50LatencyMs"]
    assert quality["qualityScore"] == 100
    assert "too few samples for success" in quality["qualityNote"]


def test_an_upstream_failure_counts_as_an_error(api, upstream_emulator, make_key, paid_token):
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key, max_calls=2)

    assert call(api, token=token, secret=secret, image="https://sandbox.invalid/error/InternalError").status_code == 502

    quality = block()
    assert (quality["executionCount"], quality["errorCount"], quality["successRate"]) == (1, 1, 0.0)


def test_samples_older_than_the_window_are_not_counted():
    service = Service.objects.get(id="celebrity-recognition")
    now = timezone.now()
    services.service_stats_record(service=service, source="call", outcome="succeeded", latency_ms=100,
                                  at=now - timedelta(hours=24))
    services.service_stats_record(service=service, source="call", outcome="succeeded", latency_ms=300,
                                  at=now - timedelta(hours=23))

    quality = block(now=now)

    assert quality["executionCount"] == 1 and quality["p50LatencyMs"] == latency.upper_bound_ms(latency.bucket(300))


def test_percentiles_come_from_calls_or_else_from_checks():
    service = Service.objects.get(id="celebrity-recognition")
    for milliseconds in (100, 110, 120, 4000):
        services.health_result_record(service=service, outcome=CheckOutcome("probe", "healthy", "ok", milliseconds))
    assert block()["p95LatencyMs"] == latency.upper_bound_ms(latency.bucket(4000))

    services.service_stats_record(service=service, source="call", outcome="succeeded", latency_ms=700)

    quality = block()
    assert quality["p50LatencyMs"] == quality["p95LatencyMs"] == latency.upper_bound_ms(latency.bucket(700))
    assert quality["healthLatencyMs"] == 4000


def test_the_latency_part_counts_samples_over_the_sla():
    service = Service.objects.get(id="celebrity-recognition")
    for milliseconds in (100, 200, 9000):
        services.health_result_record(service=service, outcome=CheckOutcome("probe", "healthy", "ok", milliseconds))
    services.service_stats_record(service=service, source="call", outcome="timeout", latency_ms=10_000)
    # Failing fast is not serving fast: neither counts as a latency sample.
    services.health_result_record(service=service, outcome=CheckOutcome("probe", "unhealthy", "HTTP 500", 12))
    services.service_stats_record(service=service, source="call", outcome="upstream_error", latency_ms=15)

    latency_part = next(part for part in block()["qualityParts"] if part["name"] == "latency")

    assert latency_part["detail"] == "2 of 4 samples in 24 hours at or under 5000 ms"


def test_concurrent_samples_of_one_hour_add_up_in_one_row():
    service = Service.objects.get(id="celebrity-recognition")
    for _ in range(5):
        services.challenge_stats_record(service=service)

    row = ServiceStatsHour.objects.get(service=service, source="challenge")
    assert row.count == 5 and row.bucket == latency.NO_LATENCY and row.within_sla is False


def test_the_catalog_search_carries_the_block_and_its_parts(api, upstream_emulator):
    services.health_run_execute(run_id=services.health_run_start(
        trigger="command", service_ids=["celebrity-recognition"], enqueue=False).pk)

    found = api.get("/api/catalog/search", {"q": "celebrity"}).json()["services"][0]

    assert found["id"] == "celebrity-recognition"
    assert found["quality"]["healthStatus"] == "healthy" and found["quality"]["qualityScore"] == 100
    assert {part["name"] for part in found["quality"]["qualityParts"]} == {
        "availability", "latency", "freshness", "success"}


def test_the_service_page_shows_the_score_with_its_parts(client, upstream_emulator):
    services.health_run_execute(run_id=services.health_run_start(
        trigger="command", service_ids=["celebrity-recognition"], enqueue=False).pk)

    html = client.get("/services/celebrity-recognition").content.decode()
    markdown = client.get("/services/celebrity-recognition.md").content.decode()

    assert "Quality score <strong>100/100</strong>" in html and "1 of the last 1 checks answered" in html
    assert '<span class="health health-healthy">healthy</span>' in html
    assert "- Quality score: 100/100" in markdown
    assert "  - availability (weight 40): 1.0, 40.0 points; 1 of the last 1 checks answered" in markdown


def test_the_catalog_reads_a_fixed_number_of_queries_however_long_the_history(upstream_emulator,
                                                                          clear_of_the_hour_turn):
    def search_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            catalog_search(query="", limit=62)
        return len(queries)

    search_queries()  # the first search of a process builds its index
    before = search_queries()
    published = list(Service.objects.filter(state="published"))
    now = timezone.now()
    for hours_ago in range(0, 48, 3):
        for service in published[:10]:
            services.health_result_record(service=service, at=now - timedelta(hours=hours_ago),
                                          outcome=CheckOutcome("probe", "healthy", "ok", 50 + hours_ago))
            services.service_stats_record(service=service, source="call", outcome="succeeded",
                                          latency_ms=80 + hours_ago, at=now - timedelta(hours=hours_ago))

    assert search_queries() == before


def test_search_breaks_ties_by_health(api):
    listed = [entry["id"] for entry in api.get("/api/catalog/search", {"limit": 100}).json()["services"]]
    first, second = listed[0], listed[1]
    for service_id, status in ((first, "unhealthy"), (second, "healthy")):
        services.health_result_record(service=Service.objects.get(id=service_id),
                                      outcome=CheckOutcome("probe", status, "checked", 10))

    reordered = [entry["id"] for entry in api.get("/api/catalog/search", {"limit": 100}).json()["services"]]

    # A listing without a query is one big tie: healthy first, unhealthy last, the rest as before.
    assert reordered[0] == second and reordered[-1] == first
    assert [i for i in reordered if i not in (first, second)] == [i for i in listed if i not in (first, second)]


def test_a_paid_call_keeps_its_result_when_counting_it_fails(api, upstream_emulator, make_key, paid_token, monkeypatch,
                                                              caplog):
    from django.db import OperationalError

    def database_gone(**sample):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "service_stats_record", database_gone)
    key, secret = make_key()
    _, token = paid_token("celebrity-recognition", key)

    assert call(api).status_code == 402
    assert call(api, token=token, secret=secret).status_code == 200
    assert "could not count a call sample of celebrity-recognition" in caplog.text


def test_closed_hours_are_summed_once_per_hour_and_the_current_hour_is_always_live(settings):
    """The cached sums of closed hours give the same block as reading every hour, and new calls still count."""
    from health import selectors

    face = Service.objects.get(id="celebrity-recognition")
    now = timezone.now()
    for hours_ago, latency_ms in ((3, 100), (10, 400), (0, 200)):
        services.service_stats_record(service=face, source="call", outcome="succeeded", latency_ms=latency_ms,
                                      at=now - timedelta(hours=hours_ago))
    cached = block(now=now)
    services.service_stats_record(service=face, source="call", outcome="upstream_error", latency_ms=50, at=now)

    again = block(now=now)
    settings.HEALTH_STATS_CACHE_SECONDS = 0
    uncached = block(now=now)

    assert cached["executionCount"] == 3 and again["executionCount"] == 4 and again["errorCount"] == 1
    assert again == uncached
    assert selectors.latency_by_hour([face.id], now=now)[face.id][-1] == latency.upper_bound_ms(latency.bucket(200))


def test_the_hourly_warm_up_fills_the_cache_so_the_next_read_only_reads_the_current_hour(
        django_assert_num_queries, clear_of_the_hour_turn):
    from health import selectors

    now = timezone.now()
    services.service_stats_record(service=Service.objects.get(id="face-detection"), source="call",
                                  outcome="succeeded", latency_ms=90, at=now - timedelta(hours=2), amount_cents=20)
    selectors.hourly_statistics_warm(now=now)

    with django_assert_num_queries(1):
        traffic = selectors.traffic_totals(now=now)
    assert traffic["24h"].calls == 1 and traffic["24h"].revenue_cents == 20

"""The overview and the health pages: figures from stored rows, runs started and watched, "check now"."""

from datetime import timedelta

import pytest
from django.utils import timezone

from catalog.models import Service
from health import latency
from health.models import HealthCheckResult, HealthRun, ServiceHealth
from health.services import health_run_execute, health_run_start, service_stats_record

pytestmark = pytest.mark.django_db


def service(service_id="celebrity-recognition"):
    return Service.objects.get(id=service_id)


def section(page: str, marker: str) -> str:
    return page.split(marker)[1].split("</table>")[0]


# --- The overview -----------------------------------------------------------------------


def test_the_overview_counts_calls_revenue_and_402s_over_a_day_and_a_week(staff):
    now = timezone.now()
    face = service()
    for hours_ago, outcome, cents in ((0, "succeeded", 20), (2, "succeeded", 20), (23, "upstream_error", 0),
                                      (30, "succeeded", 20), (24 * 6, "client_error", 0), (24 * 8, "succeeded", 20)):
        service_stats_record(service=face, source="call", outcome=outcome, latency_ms=100,
                             at=now - timedelta(hours=hours_ago), amount_cents=cents)
    service_stats_record(service=face, source="challenge", outcome="payment_required", latency_ms=None, at=now)

    page = staff.get("/dashboard/").content.decode()

    day = page.split('<tr data-period="24h">')[1].split("</tr>")[0]
    week = page.split('<tr data-period="7d">')[1].split("</tr>")[0]
    cells = lambda row: [cell.split("<")[0] for cell in row.split('<td class="num">')[1:]]  # noqa: E731
    assert cells(day) == ["3", "2", "1", "1", "USD 0.40"]
    assert cells(week) == ["5", "3", "1", "1", "USD 0.60"]  # the client error is neither success nor failure


def test_the_overview_shows_services_by_health_and_the_failing_ones_worst_first(staff):
    now = timezone.now()
    ServiceHealth.objects.create(service=service("face-detection"), status="degraded", checked_at=now)
    ServiceHealth.objects.create(service=service("scene-recognition"), status="unhealthy", checked_at=now,
                                 upstream_code="InvalidApi.NotPurchase", message="the capability is not activated")
    ServiceHealth.objects.create(service=service(), status="healthy", checked_at=now)

    page = staff.get("/dashboard/").content.decode()

    counts = page.split('id="health-counts"')[1].split("</div>\n</div>")[0]
    for status, count in (("healthy", 1), ("degraded", 1), ("unhealthy", 1), ("unknown", 59)):
        assert f'data-status="{status}">\n    <div class="figure">{count}</div>' in counts
    failing = section(page, 'id="failing"')
    assert failing.index("scene-recognition") < failing.index("face-detection")
    assert "InvalidApi.NotPurchase" in failing and "celebrity-recognition" not in failing


def test_the_overview_gives_p50_and_p95_latency_of_calls_and_checks(staff):
    now = timezone.now()
    for latency_ms in [100] * 10 + [2000] * 10:
        service_stats_record(service=service(), source="call", outcome="succeeded", latency_ms=latency_ms, at=now)
    service_stats_record(service=service(), source="check", outcome="healthy", latency_ms=40, at=now)
    shown = lambda ms: f'<td class="num">{latency.upper_bound_ms(latency.bucket(ms))} ms</td>'  # noqa: E731

    table = section(staff.get("/dashboard/").content.decode(), 'id="latency"')

    calls = table.split("Successful paid calls")[1].split("</tr>")[0]
    checks = table.split("Answered health checks")[1].split("</tr>")[0]
    assert calls == f"</th>{shown(100)}{shown(2000)}"
    assert checks == f"</th>{shown(40)}{shown(40)}"


def test_the_latest_run_polls_while_it_runs_and_stops_when_it_is_done(staff):
    run = health_run_start(trigger="dashboard", service_ids=["celebrity-recognition"], enqueue=False)

    polling = staff.get("/dashboard/?part=run", headers={"HX-Request": "true"}).content.decode()
    assert polling.lstrip().startswith('<div id="latest-run" hx-get="/dashboard/?part=run" hx-trigger="every 2s"')
    assert "0 of 1 checked" in polling

    HealthRun.objects.filter(pk=run.pk).update(status="succeeded", done=1, finished_at=timezone.now())
    done = staff.get("/dashboard/?part=run", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in done and "1 of 1 checked" in done


def test_the_overview_costs_the_same_queries_whatever_the_history(
        staff, django_assert_num_queries, clear_of_the_hour_turn):
    now = timezone.now()
    for hours_ago in range(0, 24 * 9, 5):
        for outcome in ("succeeded", "upstream_error"):
            service_stats_record(service=service(), source="call", outcome=outcome, latency_ms=100 + hours_ago,
                                 at=now - timedelta(hours=hours_ago), amount_cents=20)
    health_run_start(trigger="dashboard", enqueue=False)

    # session, user, traffic and latency (closed hours, then the current one), health counts, failing, latest run
    with django_assert_num_queries(9):
        assert staff.get("/dashboard/").status_code == 200
    # The closed hours' sums are cached until the hour turns: later requests read the current hour only.
    with django_assert_num_queries(7):
        assert staff.get("/dashboard/").status_code == 200


# --- Health runs ---------------------------------------------------------------------------


def test_an_operator_starts_a_run_for_chosen_services(staff, operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = staff.post("/dashboard/health/runs/", {
            "services": ["face-detection", "celebrity-recognition"], "concurrency": "4", "full": "on"})

    run = HealthRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/dashboard/health/runs/{run.pk}/"
    assert (run.trigger, run.started_by, run.concurrency, run.full, run.status) == (
        "dashboard", operator, 4, True, "queued")
    assert sorted(run.service_ids) == ["celebrity-recognition", "face-detection"]
    assert len(queued) == 1  # handed to Celery once the row is committed


def test_a_run_with_no_service_chosen_checks_every_published_one(staff):
    Service.objects.filter(id="face-detection").update(state="draft")

    staff.post("/dashboard/health/runs/", {"concurrency": "10"})

    assert HealthRun.objects.get().total == 61


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"concurrency": "0"}, "concurrency", "greater than or equal to 1"),
    ({"concurrency": "201"}, "concurrency", "less than or equal to 200"),
    ({"concurrency": "abc"}, "concurrency", "Enter a whole number."),
    ({"concurrency": ""}, "concurrency", "This field is required."),
    ({"concurrency": "2", "services": ["no-such-service"]}, "services", "Select a valid choice."),
])
def test_a_bad_run_is_refused_beside_its_field_and_nothing_is_queued(staff, data, field, message):
    response = staff.post("/dashboard/health/runs/", data)

    assert response.status_code == 400
    assert message in response.content.decode().split(f'id="id_{field}_error"')[1].split("</ul>")[0]
    assert not HealthRun.objects.exists()


def test_a_run_page_polls_until_the_run_finishes_then_lists_failures_first(staff, upstream):
    upstream.answers = [(404, {"Code": "InvalidApi.NotPurchase", "Message": "not activated", "RequestId": "r1"}, 0)]
    upstream.default = (400, {"Code": "MissingImageURL", "Message": "ImageURL is mandatory", "RequestId": "r2"}, 0)
    run = health_run_start(trigger="dashboard", service_ids=["celebrity-recognition", "face-detection"],
                           concurrency=1, enqueue=False)

    queued = staff.get(f"/dashboard/health/runs/{run.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert queued.lstrip().startswith('<section id="run-progress" data-status="queued"') and "every 1s" in queued

    health_run_execute(run_id=run.pk)
    finished = staff.get(f"/dashboard/health/runs/{run.pk}/", headers={"HX-Request": "true"}).content.decode()

    assert 'data-status="succeeded"' in finished and "hx-trigger" not in finished
    assert "2 of 2" in finished
    results = finished.split('id="run-results"')[1]
    assert results.index("celebrity-recognition") < results.index("face-detection")  # the unhealthy one first
    assert "InvalidApi.NotPurchase" in results
    whole = staff.get(f"/dashboard/health/runs/{run.pk}/").content.decode()
    assert "<html" in whole and "<noscript>" not in whole


def test_the_runs_list_shows_each_run_and_who_started_it(staff, operator):
    health_run_start(trigger="dashboard", started_by=operator, service_ids=["face-detection"], enqueue=False)
    health_run_start(trigger="schedule", enqueue=False)

    runs = section(staff.get("/dashboard/health/runs/").content.decode(), 'id="runs"')

    assert "Dashboard: op" in runs and "Schedule" in runs and "0/1" in runs and "0/62" in runs


def test_an_unknown_run_is_404(staff):
    assert staff.get("/dashboard/health/runs/999999/").status_code == 404


# --- Check now ------------------------------------------------------------------------------


def test_check_now_probes_the_service_and_swaps_in_the_result(staff, operator, upstream_emulator):
    response = staff.post("/dashboard/services/celebrity-recognition/check/", headers={"HX-Request": "true"})

    page = response.content.decode()
    assert response.status_code == 200 and page.lstrip().startswith('<section id="health-panel">')
    assert "Checked just now" in page and "health-healthy" in page and "MissingImageURL" in page
    result = HealthCheckResult.objects.get()
    assert (result.service_id, result.status, result.run.trigger, result.run.started_by) == (
        "celebrity-recognition", "healthy", "dashboard", operator)
    assert ServiceHealth.objects.get(service_id="celebrity-recognition").status == "healthy"


def test_check_now_without_javascript_redirects_back_with_the_result(staff, upstream):
    upstream.default = (403, {"Code": "InvalidAccessKeyId.NotFound", "Message": "bad key", "RequestId": "r"}, 0)

    response = staff.post("/dashboard/services/celebrity-recognition/check/")

    assert response.status_code == 302 and response["Location"] == "/dashboard/services/celebrity-recognition/"
    page = staff.get(response["Location"]).content.decode()
    assert "Checked celebrity-recognition: unhealthy" in page
    assert '<rect' in page.split('id="health-panel"')[1]  # the history chart has the check


def test_a_run_the_broker_refuses_is_shown_as_an_error_not_a_500(committed_db, staff, monkeypatch):
    # committed_db: in autocommit, as in production, the run is queued the moment it is created.
    from health.tasks import execute_health_run

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(execute_health_run, "apply_async", broker_down)

    response = staff.post("/dashboard/health/runs/", {"concurrency": "2", "services": ["face-detection"]})

    assert response.status_code == 400
    assert "could not be queued" in response.content.decode()
    assert HealthRun.objects.get().status == "failed"  # not left queued, where it would hold back the schedule

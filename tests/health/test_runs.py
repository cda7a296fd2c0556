"""Health runs: starting, checking concurrently, recording, surviving bad upstreams, reaping, purging."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from catalog.models import Service
from health import services
from health.models import HealthCheckResult, HealthRun, ServiceHealth, ServiceStatsHour
from tests.conftest import Scripted

pytestmark = pytest.mark.django_db

IDS = ["celebrity-recognition", "scene-recognition", "face-detection", "image-tagging", "ocr-general",
       "vehicle-type-recognition"]
PARAMETER_ERROR = (400, {"Code": "MissingImageURL", "Message": "ImageURL is mandatory.", "RequestId": "P"}, 0)


@pytest.fixture
def ids():
    known = list(Service.objects.filter(id__in=IDS).values_list("id", flat=True))
    assert len(known) >= 4, known
    return sorted(known)


def run_now(**options):
    run = services.health_run_start(trigger=HealthRun.Trigger.COMMAND, enqueue=False, **options)
    return services.health_run_execute(run_id=run.pk)


def test_a_run_checks_every_published_service_by_default(upstream_emulator):
    run = run_now(concurrency=20)

    published = Service.objects.filter(state="published").count()
    assert run.status == "succeeded" and run.total == run.done == published
    assert run.started_at and run.finished_at and run.heartbeat_at
    assert HealthCheckResult.objects.filter(run=run).count() == published
    statuses = set(HealthCheckResult.objects.filter(run=run).values_list("status", flat=True))
    # Three actions have no parameter to leave out: no free probe, so unknown rather than a guess.
    assert statuses == {"healthy", "unknown"}
    assert HealthCheckResult.objects.filter(run=run, status="unknown").count() == 3


def test_a_run_records_each_result_and_the_services_latest_health(upstream_emulator, ids):
    run = run_now(service_ids=ids, concurrency=2)

    for service_id in ids:
        result = HealthCheckResult.objects.get(run=run, service_id=service_id)
        assert result.status == "healthy" and result.http_status == 400
        assert result.upstream_code.startswith("Missing") and result.latency_ms is not None
        health = ServiceHealth.objects.get(service_id=service_id)
        assert (health.status, health.checked_at, health.upstream_code) == (
            "healthy", result.checked_at, result.upstream_code)
        assert health.recent == [["healthy", result.latency_ms]]
    assert ServiceStatsHour.objects.filter(service_id__in=ids, source="check").count() >= 1


def test_the_recent_statuses_keep_the_newest_twenty(upstream_emulator):
    service = Service.objects.get(id="celebrity-recognition")
    for _ in range(22):
        services.health_result_record(service=service, outcome=services.probes.CheckOutcome(
            "probe", "unhealthy", "down", 5))
    services.health_result_record(service=service, outcome=services.probes.CheckOutcome("probe", "healthy", "up", 7))

    recent = ServiceHealth.objects.get(service=service).recent
    assert len(recent) == 20 and recent[0] == ["healthy", 7] and recent[1] == ["unhealthy", 5]


def test_an_older_result_does_not_replace_a_newer_latest_health(upstream_emulator):
    service = Service.objects.get(id="celebrity-recognition")
    now = timezone.now()
    services.health_result_record(service=service, outcome=services.probes.CheckOutcome("probe", "healthy", "up"),
                                  at=now)
    services.health_result_record(service=service, outcome=services.probes.CheckOutcome("probe", "unhealthy", "x"),
                                  at=now - timedelta(minutes=1))

    assert ServiceHealth.objects.get(service=service).status == "healthy"
    assert HealthCheckResult.objects.filter(service=service).count() == 2


def test_services_are_checked_concurrently_up_to_the_limit(upstream, ids):
    upstream.default = (*PARAMETER_ERROR[:2], 0.3)

    run_now(service_ids=ids, concurrency=3)

    assert len(upstream.requests) == len(ids)
    # Never more than asked for, and really in parallel.
    assert upstream.most_in_flight == 3


def test_one_at_a_time_means_one_at_a_time(upstream, ids):
    upstream.default = (*PARAMETER_ERROR[:2], 0.05)

    run_now(service_ids=ids[:3], concurrency=1)

    assert upstream.most_in_flight == 1


@pytest.mark.parametrize(("answer", "reason"), [
    ((400, {"Code": "MissingImageURL", "Message": "late"}, 2.0), "the upstream did not answer in time"),
    ((200, b"<!doctype html><title>login</title>", 0), "upstream answered 200 without a JSON object"),
    ((502, b"<html>Bad Gateway</html>", 0), "HTTP 502 without an error body"),
    ((200, Scripted.CLOSE, 0), "the upstream connection failed: RemoteProtocolError"),
])
def test_a_bad_upstream_gives_unhealthy_results_with_the_reason_and_the_run_completes(upstream, ids, answer,
                                                                                       reason):
    upstream.default = answer

    run = run_now(service_ids=ids[:2], concurrency=2)

    assert run.status == "succeeded" and run.done == 2
    for result in HealthCheckResult.objects.filter(run=run):
        assert result.status == "unhealthy" and reason in result.message


def test_a_check_past_its_bound_is_recorded_and_the_run_ends(upstream, ids, monkeypatch):
    # httpx's read timeout restarts with every byte, so a trickling upstream could hold a check
    # for ever: each check and the whole run also have bounds of their own.
    monkeypatch.setattr(services, "_check_seconds", lambda: 0.3)
    monkeypatch.setattr(services, "CHECK_MARGIN_SECONDS", 0)
    monkeypatch.setattr(services, "HEARTBEAT_SECONDS", 0.05)
    upstream.default = (*PARAMETER_ERROR[:2], 1.5)

    with override_settings(ALIBABA_CLOUD_READ_TIMEOUT=5):
        run = run_now(service_ids=ids[:3], concurrency=1)

    assert run.status == "succeeded" and run.done == 3
    assert sorted(HealthCheckResult.objects.filter(run=run).values_list("status", "message")) == [
        ("unhealthy", "no answer within 0.3 s"),
        ("unknown", "the run ran out of time before this service's check started"),
        ("unknown", "the run ran out of time before this service's check started"),
    ]


@pytest.mark.parametrize("concurrency", [0, -1, 201, 10_000])
def test_a_run_with_a_concurrency_out_of_range_is_refused_and_nothing_is_created(concurrency):
    with pytest.raises(services.HealthRunRefused, match="concurrency must be between 1 and 200"):
        services.health_run_start(trigger="command", concurrency=concurrency, enqueue=False)

    assert not HealthRun.objects.exists()


def test_a_run_for_an_unknown_service_is_refused_with_the_closest_ids():
    with pytest.raises(services.HealthRunRefused) as refused:
        services.health_run_start(trigger="command", service_ids=["celebrity-recognition", "celebrty-recognition"],
                                  enqueue=False)

    assert str(refused.value).startswith(
        "unknown service id: 'celebrty-recognition' (did you mean celebrity-recognition, ")
    assert not HealthRun.objects.exists()


def test_a_draft_service_can_be_checked_by_name(upstream_emulator):
    Service.objects.filter(id="celebrity-recognition").update(state="draft")

    run = run_now(service_ids=["celebrity-recognition"])

    assert run.results.get().status == "healthy"


def test_a_run_is_executed_once_however_often_its_task_is_delivered(upstream, ids):
    upstream.default = PARAMETER_ERROR
    run = services.health_run_start(trigger="command", service_ids=ids[:2], enqueue=False)

    assert services.health_run_execute(run_id=run.pk).status == "succeeded"
    assert services.health_run_execute(run_id=run.pk) is None
    assert len(upstream.requests) == 2


def test_a_run_that_breaks_is_marked_failed_with_the_reason(upstream, ids, monkeypatch):
    upstream.default = PARAMETER_ERROR

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "health_results_record", broken)

    run = run_now(service_ids=ids[:2])

    assert run.status == "failed" and run.error == "the run stopped: RuntimeError: disk full"
    assert run.finished_at is not None


def test_a_service_deleted_before_its_run_started_is_left_out(upstream, ids):
    upstream.default = PARAMETER_ERROR
    service = Service.objects.create(**{
        field.attname: getattr(Service.objects.get(id=ids[0]), field.attname)
        for field in Service._meta.concrete_fields if field.attname not in ("id", "internal_id")
    } | {"id": "short-lived", "internal_id": "short-lived"})
    run = services.health_run_start(trigger="command", service_ids=[ids[1], "short-lived"], enqueue=False)
    service.delete()

    run = services.health_run_execute(run_id=run.pk)

    assert (run.status, run.total, run.done) == ("succeeded", 1, 1)


def test_a_running_run_without_a_heartbeat_is_reaped_as_failed():
    now = timezone.now()
    stalled = HealthRun.objects.create(trigger="schedule", concurrency=1, total=3, status="running",
                                       started_at=now - timedelta(minutes=10), heartbeat_at=now - timedelta(minutes=5))
    alive = HealthRun.objects.create(trigger="schedule", concurrency=1, total=3, status="running",
                                     started_at=now - timedelta(minutes=10), heartbeat_at=now)
    forgotten = HealthRun.objects.create(trigger="dashboard", concurrency=1, total=3,
                                         created_at=now - timedelta(days=2))

    assert services.health_runs_reap(stale_after=timedelta(minutes=2)) == 2

    stalled.refresh_from_db(), alive.refresh_from_db(), forgotten.refresh_from_db()
    assert stalled.status == "failed" and stalled.error == "the worker running it stopped (no heartbeat for 120 s)"
    assert alive.status == "running"
    assert forgotten.status == "failed" and forgotten.error == "no worker started it within a day"


def test_history_older_than_the_retention_window_is_purged():
    service = Service.objects.get(id="celebrity-recognition")
    now = timezone.now()
    old_run = HealthRun.objects.create(trigger="schedule", concurrency=1, status="succeeded",
                                       created_at=now - timedelta(days=31))
    for age, run in ((timedelta(days=31), old_run), (timedelta(days=29), None)):
        services.health_result_record(service=service, run=run, at=now - age,
                                      outcome=services.probes.CheckOutcome("probe", "healthy", "ok", 10))

    purged = services.health_history_purge(older_than=timedelta(days=30))

    assert purged == {"results": 1, "runs": 1, "hours": 1}
    assert HealthCheckResult.objects.count() == 1 and ServiceStatsHour.objects.count() == 1
    assert ServiceHealth.objects.filter(service=service).exists(), "the latest health is not history"


def test_a_scheduled_run_waits_for_the_previous_one(upstream_emulator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        first = services.health_run_schedule()

    assert first is not None and first.trigger == "schedule" and len(queued) == 1
    assert services.health_run_schedule() is None, "the first is still queued"
    services.health_run_execute(run_id=first.pk)
    assert services.health_run_schedule() is not None


# --- The command --------------------------------------------------------------


def test_the_command_runs_the_chosen_services_inline_and_prints_each_result(upstream_emulator, capsys):
    call_command("run_health_checks", "--service", "celebrity-recognition", "--service", "scene-recognition",
                 "--concurrency", "2", "--inline")

    out = capsys.readouterr().out
    assert "2 service(s), concurrency 2" in out
    assert "celebrity-recognition" in out and "MissingImageURL" in out
    assert "succeeded in" in out and "2/2 checked" in out


@pytest.mark.parametrize(("arguments", "message"), [
    (["--service", "no-such-service"], "unknown service id: 'no-such-service'"),
    (["--concurrency", "0"], "concurrency must be between 1 and 200, not 0"),
    (["--concurrency", "10000"], "concurrency must be between 1 and 200, not 10000"),
])
def test_the_command_refuses_bad_input_clearly(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("run_health_checks", *arguments, "--inline")

    assert not HealthRun.objects.exists()


def test_the_command_queues_a_run_for_the_workers(django_capture_on_commit_callbacks, capsys):
    with django_capture_on_commit_callbacks() as queued:
        call_command("run_health_checks", "--service", "celebrity-recognition", "--no-wait")

    run = HealthRun.objects.get()
    assert run.status == "queued" and run.trigger == "command" and len(queued) == 1
    assert f"Health run {run.pk}: 1 service(s)" in capsys.readouterr().out


def test_a_run_that_cannot_be_queued_is_failed_so_the_schedule_goes_on(django_capture_on_commit_callbacks,
                                                                        monkeypatch):
    from health.tasks import execute_health_run

    def broker_down(*args, **kwargs):
        raise ConnectionRefusedError("Error 111 connecting to the broker")

    monkeypatch.setattr(execute_health_run, "apply_async", broker_down)
    with pytest.raises(ConnectionRefusedError), django_capture_on_commit_callbacks(execute=True):
        services.health_run_schedule()

    run = HealthRun.objects.get()
    assert run.status == "failed" and run.error.startswith("could not be queued: ConnectionRefusedError")
    monkeypatch.undo()
    with django_capture_on_commit_callbacks() as queued:
        assert services.health_run_schedule() is not None
    assert len(queued) == 1


def test_a_service_deleted_while_it_is_checked_loses_its_result_but_not_the_run(upstream, ids, monkeypatch):
    upstream.default = PARAMETER_ERROR
    doomed = Service.objects.create(**{
        field.attname: getattr(Service.objects.get(id=ids[0]), field.attname)
        for field in Service._meta.concrete_fields if field.attname not in ("id", "internal_id")
    } | {"id": "deleted-midway", "internal_id": "deleted-midway"})
    run = services.health_run_start(trigger="command", service_ids=[ids[1], doomed.id], concurrency=2,
                                    enqueue=False)
    record = services.health_results_record

    def delete_then_record(**kwargs):
        # Deleted after the run read its services, before their results are stored.
        Service.objects.filter(pk="deleted-midway").delete()
        return record(**kwargs)

    monkeypatch.setattr(services, "health_results_record", delete_then_record)

    run = services.health_run_execute(run_id=run.pk)

    assert (run.status, run.done, run.total) == ("succeeded", 2, 2)
    assert list(run.results.values_list("service_id", flat=True)) == [ids[1]]


def test_a_result_that_is_not_a_check_keeps_the_last_real_status_and_its_age(upstream_emulator):
    service = Service.objects.get(id="celebrity-recognition")
    checked_at = timezone.now() - timedelta(days=3)
    services.health_result_record(service=service, at=checked_at,
                                  outcome=services.probes.CheckOutcome("probe", "healthy", "ok", 120))

    services.health_result_record(service=service, outcome=services.probes.CheckOutcome(
        "probe", "unknown", "the run ran out of time before this service's check started"))

    health = ServiceHealth.objects.get(service=service)
    assert (health.status, health.checked_at, health.latency_ms) == ("healthy", checked_at, 120)
    assert health.recent == [["unknown", None], ["healthy", 120]]
    assert HealthCheckResult.objects.filter(service=service).count() == 2

"""The jobs on the dashboard: the jobs page (filters, keyset pages, htmx), a job's page, and the "Recent jobs"
sections of a service's and an API key's pages."""

import re
from datetime import UTC, datetime, timedelta

import pytest

from catalog.models import Service
from jobs.models import Job
from jobs.services import job_claim, job_create, job_finish
from payments import credentials
from payments.models import ToolCall
from payments.pipeline import paid_call_run, paid_job_run
from payments.services import api_key_create

pytestmark = pytest.mark.django_db

JOBS = "/dashboard/jobs/"
ROW = re.compile(r'<tr data-job="(job_[0-9a-f]{32})"')
IMAGE = "https://example.com/face.jpg"


def _job(service="celebrity-recognition", key=None, status="queued", *, error="the upstream failed",
         created_at=None, arguments=None) -> Job:
    """A job made by the jobs services, taken as far as `status` by the worker's own steps."""
    call = ToolCall.objects.create(service_id=service, api_key=key, payment_method="token")
    job = job_create(service=Service.objects.get(pk=service), api_key=key, call=call,
                     arguments=arguments or {"ImageURL": IMAGE}).job
    if created_at is not None:
        Job.objects.filter(pk=job.pk).update(created_at=created_at)
    if status != Job.Status.QUEUED:
        job = job_claim(job_id=job.pk)
        if status == Job.Status.SUCCEEDED:
            job_finish(job=job, http_status=200, body={"code": "200", "data": {"Action": "Done"}})
        elif status == Job.Status.FAILED:
            job_finish(job=job, http_status=502, body={"error": error, "upstreamCode": "InternalError"})
    return Job.objects.get(pk=job.pk)


def _ids(response) -> list[str]:
    assert response.status_code == 200
    return ROW.findall(response.content.decode())


def _shown(staff, **filters) -> set[str]:
    return set(_ids(staff.get(JOBS, filters)))


def _walk(staff, url) -> list[str]:
    seen = []
    while url:
        page = staff.get(url).content.decode()
        seen += ROW.findall(page)
        older = re.search(r'<a href="([^"]+)" rel="next"', page)
        url = older[1].replace("&amp;", "&") if older else None
    return seen


# --- The jobs page ----------------------------------------------------------------

def test_a_job_submitted_and_run_through_the_pipeline_shows_on_the_jobs_page_and_its_own(
        staff, upstream_emulator, make_key, paid_token):
    key, secret = make_key(label="vision agent")
    payment, token = paid_token("celebrity-recognition", key)
    accepted = paid_call_run(reference="celebrity-recognition", arguments={"ImageURL": IMAGE}, api_key=secret,
                             payment_token=token, respond_async=True)
    assert accepted.status == 202
    job_id, job_secret = accepted.body["jobId"], accepted.body["jobSecret"]
    assert paid_job_run(job_id=job_id).status == Job.Status.SUCCEEDED

    listing = staff.get(JOBS).content.decode()
    row = re.search(rf'<tr data-job="{job_id}".*?</tr>', listing, re.S)[0]
    assert "celebrity-recognition" in row and "vision agent" in row and key.client_id in row
    assert 'class="health status-succeeded"' in row and f'href="/dashboard/jobs/{job_id}/"' in row
    assert ">yes<" in row  # charged

    response = staff.get(f"{JOBS}{job_id}/")
    page = response.content.decode()
    job = Job.objects.select_related("call").get(pk=job_id)
    assert response.status_code == 200
    assert IMAGE in page and "&quot;Action&quot;: &quot;DetectCelebrity&quot;" in page
    assert f'href="/dashboard/payments/{payment.pk}/"' in page and job.call.upstream_request_id in page
    assert job_secret not in page and job.secret_hash not in page
    assert token not in page and token.split(".")[1] not in page


def test_staff_sees_the_jobs_filtered_by_service_key_and_status(staff):
    alice = api_key_create(label="alice").api_key
    bob = api_key_create(label="bob").api_key
    queued = _job(key=alice)
    processing = _job(key=alice, status="processing")
    succeeded = _job(service="face-detection", key=bob, status="succeeded")
    failed = _job(service="face-detection", status="failed")

    assert _shown(staff) == {queued.pk, processing.pk, succeeded.pk, failed.pk}
    assert _shown(staff, service="face-detection") == {succeeded.pk, failed.pk}
    assert _shown(staff, key=alice.client_id) == {queued.pk, processing.pk}
    assert _shown(staff, key="BOB") == {succeeded.pk}
    assert _shown(staff, status="processing") == {processing.pk}
    assert _shown(staff, status="failed", service="face-detection") == {failed.pk}
    assert _shown(staff, status="failed", key=alice.client_id) == set()


def test_the_rows_say_who_submitted_it_how_it_went_and_why_it_failed(staff):
    failed = _job(status="failed", error="InternalError: the upstream is down")
    Job.objects.filter(pk=failed.pk).update(upstream_status="FAILED", upstream_job_id="UP-1")

    page = staff.get(JOBS).content.decode()

    row = re.search(rf'<tr data-job="{failed.pk}".*?</tr>', page, re.S)[0]
    assert "anonymous" in row and f"{failed.pk[:12]}…" in row and f'title="{failed.pk}"' in row
    assert "<code>502</code> InternalError: the upstream is down" in row
    assert "FAILED" in row and "UP-1" in row and ">no<" in row


@pytest.mark.parametrize(("filters", "field", "message"), [
    ({"status": "lost"}, "status", "Select a valid choice."),
    ({"service": "no-such-service"}, "service", "Select a valid choice."),
    ({"key": "key_000000000000"}, "key", "No API key has this client id or label."),
    ({"key": "x" * 201}, "key", "at most 200 characters"),
])
def test_a_bad_filter_is_shown_on_the_form_not_a_500(staff, filters, field, message):
    _job()

    page = staff.get(JOBS, filters).content.decode()

    errors = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', page, re.S)
    assert errors and message in errors[1]
    assert "No jobs shown until the filters are fixed." in page and not ROW.search(page)


@pytest.mark.parametrize("before", ["garbage", "2026-01-01T00:00:00+00:00,pay_1", "2026-01-01T00:00:00,job_1",
                                    "2026-01-01T00:00:00+00:00,job_" + "g" * 32, ","])
def test_a_bad_page_link_is_shown_not_a_500(staff, before):
    response = staff.get(JOBS, {"before": before})

    assert response.status_code == 200
    assert "This page link is not valid" in response.content.decode()


def test_older_pages_follow_without_repeating_or_skipping_a_job_and_keep_the_filters(staff):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    jobs = [_job(service="face-detection" if index % 3 == 0 else "celebrity-recognition",
                 created_at=start + timedelta(minutes=index)) for index in range(100)]
    # Twenty at the very same instant, across a page boundary: the id breaks the tie.
    tied = [_job(created_at=start + timedelta(minutes=30)) for _ in range(20)]

    seen = _walk(staff, JOBS)

    assert len(seen) == len(set(seen)) == 120
    assert seen == list(Job.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))
    assert {job.pk for job in jobs + tied} == set(seen)
    face = _walk(staff, f"{JOBS}?service=face-detection")
    assert len(face) == 34 and set(Job.objects.filter(pk__in=face).values_list("service_id", flat=True)) == {
        "face-detection"}


def test_the_jobs_page_costs_the_same_few_queries_for_a_page_of_50_jobs(staff, django_assert_max_num_queries):
    keys = [api_key_create(label=f"agent {index}").api_key for index in range(10)]
    for index in range(60):
        _job(key=keys[index % 10] if index % 3 else None, status=["queued", "succeeded", "failed"][index % 3])

    # session, user, the service choices, the page (with its keys)
    with django_assert_max_num_queries(4):
        first = staff.get(JOBS)
    # ... and one more to find the keys a key filter names
    with django_assert_max_num_queries(5):
        filtered = staff.get(JOBS, {"key": keys[1].client_id, "status": "succeeded"})

    assert len(_ids(first)) == 50 and 'rel="next"' in first.content.decode()
    assert set(_ids(filtered)) == set(Job.objects.filter(api_key=keys[1], status="succeeded")
                                      .values_list("pk", flat=True))


# --- htmx and access --------------------------------------------------------------

def test_htmx_gets_only_the_table_partial_with_the_form_out_of_band(staff):
    failed = _job(status="failed")
    _job()

    response = staff.get(JOBS, {"status": "failed"}, headers={"HX-Request": "true"})

    page = response.content.decode()
    assert page.lstrip().startswith('<section id="jobs-table">') and "<html" not in page
    assert ROW.findall(page) == [failed.pk]
    assert re.search(r'<form [^>]*id="job-filters"[^>]*hx-swap-oob="true"', page)
    assert response["Vary"] and "HX-Request" in response["Vary"]


def test_the_filter_form_works_as_a_plain_form_and_with_htmx(staff):
    page = staff.get(JOBS).content.decode()

    form = re.search(r'<form method="get" action="/dashboard/jobs/"[^>]*>', page)[0]
    assert 'hx-get="/dashboard/jobs/"' in form and 'hx-target="#jobs-table"' in form
    assert 'hx-push-url="true"' in form and 'hx-trigger="change, submit"' in form
    assert '<a href="/dashboard/jobs/">Jobs</a>' in page  # in the dashboard's navigation


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    job = _job()

    for path in (f"{JOBS}?status=queued", f"{JOBS}{job.pk}/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/dashboard/login/?next=/dashboard/")
    htmx = client.get(JOBS, headers={"HX-Request": "true"})
    assert htmx.status_code == 204 and htmx["HX-Redirect"].startswith("/dashboard/login/?next=")


def test_a_user_who_is_not_staff_can_read_the_jobs_and_a_job(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("viewer", password="pw"))
    job = _job()

    assert client.get(JOBS).status_code == client.get(f"{JOBS}{job.pk}/").status_code == 200
    assert client.post(JOBS).status_code == 403


# --- A job's page -------------------------------------------------------------------

def test_a_script_in_a_jobs_error_or_arguments_is_rendered_as_text(staff):
    script = "<script>alert('x')</script>"
    job = _job(status="failed", error=f"upstream said {script}", arguments={"ImageURL": f"https://e.com/{script}"})

    listing = staff.get(JOBS).content.decode()
    detail = staff.get(f"{JOBS}{job.pk}/").content.decode()

    for page in (listing, detail):
        assert script not in page and "&lt;script&gt;alert(" in page


def test_a_job_page_shows_its_timeline_call_and_error_but_hides_a_retry_token(staff, make_key, paid_token):
    key, _ = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    call = ToolCall.objects.create(service_id="celebrity-recognition", api_key=key, payment=payment,
                                   payment_method="token", outcome="upstream_error", http_status=502,
                                   upstream_request_id="REQ-42")
    job = job_create(service=Service.objects.get(pk="celebrity-recognition"), api_key=key, call=call,
                     arguments={"ImageURL": IMAGE}).job
    job = job_claim(job_id=job.pk)
    # What a settle-first call that failed answers: the token of its payment, good for one more call.
    job_finish(job=job, http_status=502, body={"error": "the upstream failed", "charged": True,
                                               "retryToken": token, "paymentId": payment.pk})

    page = staff.get(f"{JOBS}{job.pk}/").content.decode()

    assert token not in page and token.split(".")[1] not in page
    assert "(hidden: a payment credential)" in page and "the upstream failed" in page
    assert f'href="/dashboard/payments/{payment.pk}/"' in page and "REQ-42" in page
    times = re.search(r'<dl id="job-times">(.*?)</dl>', page, re.S)[1]
    for label in ("Created", "Started", "Finished", "Purged after"):
        assert f"<dt>{label}</dt>" in times
    assert credentials.job_secret_hash("x") not in page and Job.objects.get(pk=job.pk).secret_hash not in page
    assert 'id="job-result"' not in page and 'id="job-error"' in page


def test_a_job_page_costs_three_queries(staff, django_assert_max_num_queries):
    job = _job(key=api_key_create(label="agent").api_key, status="succeeded")

    # session, user, the job with its service, key and call
    with django_assert_max_num_queries(3):
        response = staff.get(f"{JOBS}{job.pk}/")

    assert response.status_code == 200


def test_an_unknown_or_purged_job_is_404(staff):
    assert staff.get(f"{JOBS}job_{'0' * 32}/").status_code == 404


# --- Per service and per key --------------------------------------------------------

def _section(page: str) -> str:
    return re.search(r'<section id="recent-jobs">(.*?)</section>', page, re.S)[1]


def test_a_service_page_shows_its_ten_latest_jobs_counts_by_status_and_a_link_to_all(staff):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    mine = [_job(created_at=start + timedelta(minutes=index)) for index in range(11)]
    failed = _job(status="failed")
    _job(service="face-detection")

    section = _section(staff.get("/dashboard/services/celebrity-recognition/").content.decode())

    assert ROW.findall(section) == [failed.pk] + [job.pk for job in reversed(mine)][:9]
    assert re.search(r'data-status="queued">.*?queued</span> 11</a>', section)
    assert re.search(r'data-status="failed">.*?failed</span> 1</a>', section)
    assert re.search(r'data-status="succeeded">.*?succeeded</span> 0</a>', section)
    assert 'href="/dashboard/jobs/?service=celebrity-recognition&amp;status=failed"' in section
    assert '<a href="/dashboard/jobs/?service=celebrity-recognition" id="recent-jobs-all">all 12 jobs</a>' in section


def test_a_key_page_shows_its_latest_jobs_and_links_to_them_on_the_jobs_page(staff):
    key = api_key_create(label="agent").api_key
    done = _job(key=key, status="succeeded")
    _job(service="face-detection")

    section = _section(staff.get(f"/dashboard/keys/{key.pk}/").content.decode())

    assert ROW.findall(section) == [done.pk]
    link = f'/dashboard/jobs/?key={key.client_id}'
    assert f'<a href="{link}" id="recent-jobs-all">all 1 job</a>' in section
    assert _shown(staff, key=key.client_id) == {done.pk}


def test_a_service_or_key_without_jobs_says_so(staff):
    key = api_key_create(label="agent").api_key

    for url in ("/dashboard/services/celebrity-recognition/", f"/dashboard/keys/{key.pk}/"):
        section = _section(staff.get(url).content.decode())
        assert "No job stored." in section and "all 0 jobs" in section

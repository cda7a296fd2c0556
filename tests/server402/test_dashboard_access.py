"""Who may use the dashboard: sign-in for every page, staff for every write, CSRF on every form."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = [
    "/dashboard/",
    "/dashboard/services/",
    "/dashboard/services/celebrity-recognition/",
    "/dashboard/pricing/",
    "/dashboard/pricing/new/",
    "/dashboard/pricing/aliyun-viapi/",
    "/dashboard/health/runs/",
    "/dashboard/keys/",
    "/dashboard/payments/",
    "/dashboard/jobs/",
]
# Every write of the catalog and health pages, with a body that would succeed for staff.
WRITES = [
    ("/dashboard/services/celebrity-recognition/", {"name": "Renamed", "description": "d", "state": "published",
                                                     "description_for_model": "m", "pricing_policy": "aliyun-viapi"}),
    ("/dashboard/services/celebrity-recognition/check/", {}),
    ("/dashboard/pricing/new/", {"id": "cheap", "price": "0.05", "max_calls": "1", "settle_mode": "settle_first"}),
    ("/dashboard/pricing/aliyun-viapi/", {"price": "9.99", "max_calls": "1", "settle_mode": "settle_first"}),
    ("/dashboard/health/runs/", {"concurrency": "2"}),
]


@pytest.fixture
def viewer(django_user_model):
    return django_user_model.objects.create_user("viewer", password="pw", is_staff=False)


@pytest.mark.parametrize("url", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page_and_back(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/dashboard/login/?next=")


def test_an_htmx_request_without_a_session_redirects_the_whole_page_to_the_login(client):
    response = client.get("/dashboard/services/?q=face", headers={
        "HX-Request": "true", "HX-Current-URL": "http://testserver/dashboard/services/?q=fa"})

    assert response.status_code == 204
    assert response["HX-Redirect"] == "/dashboard/login/?next=/dashboard/services/%3Fq%3Dfa"


@pytest.mark.parametrize("url", PAGES)
def test_every_page_shows_the_mode(client, operator, url):
    client.force_login(operator)

    response = client.get(url)

    assert response.status_code == 200
    assert b'data-mode="sandbox"' in response.content


def test_an_expired_session_goes_to_the_login_page_and_back_to_the_page(client, operator):
    client.force_login(operator)
    session = client.session
    session.set_expiry(-1)
    session.save()

    sent_away = client.get("/dashboard/pricing/")
    assert sent_away["Location"] == "/dashboard/login/?next=/dashboard/pricing/"
    login_page = client.get(sent_away["Location"])
    assert b'name="next" value="/dashboard/pricing/"' in login_page.content
    back = client.post("/dashboard/login/", {"username": "op", "password": "pw", "next": "/dashboard/pricing/"})

    assert back.status_code == 302 and back["Location"] == "/dashboard/pricing/"
    assert client.get("/dashboard/pricing/").status_code == 200


def test_a_wrong_password_stays_on_the_login_page_with_an_error(client, operator):
    response = client.post("/dashboard/login/", {"username": "op", "password": "nope"})

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert "_auth_user_id" not in client.session


def test_signing_out_is_a_post_and_ends_the_session(client, operator):
    client.force_login(operator)

    assert client.post("/dashboard/logout/")["Location"] == "/dashboard/login/"
    assert client.get("/dashboard/")["Location"].startswith("/dashboard/login/")


@pytest.mark.parametrize(("url", "data"), WRITES)
def test_a_signed_in_user_who_is_not_staff_gets_403_on_every_write_and_nothing_changes(client, viewer, url, data):
    from catalog.models import PricingPolicy, Service
    from health.models import HealthRun

    before = (list(Service.objects.values_list("name", flat=True)), list(PricingPolicy.objects.values()),
              HealthRun.objects.count())
    client.force_login(viewer)

    response = client.post(url, data)

    assert response.status_code == 403
    assert before == (list(Service.objects.values_list("name", flat=True)), list(PricingPolicy.objects.values()),
                      HealthRun.objects.count())


def test_a_viewer_may_read_but_sees_no_forms(client, viewer):
    client.force_login(viewer)

    page = client.get("/dashboard/services/celebrity-recognition/").content.decode()

    assert 'id="service-form"' not in page and "Check now" not in page
    assert "(read-only)" in page


@pytest.mark.parametrize(("url", "data"), WRITES)
def test_a_write_without_the_csrf_token_is_refused(operator, url, data):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)

    assert client.post(url, data).status_code == 403


def test_htmx_writes_carry_the_csrf_token_from_the_body(client, operator):
    client.force_login(operator)

    page = client.get("/dashboard/services/celebrity-recognition/").content.decode()

    assert "hx-headers='{\"X-CSRFToken\": \"" in page


def test_pages_fetch_nothing_from_outside_the_server(client, operator):
    client.force_login(operator)
    for url in PAGES:
        page = client.get(url).content.decode()
        assert "://" not in "".join(part.split('"')[0] for part in page.split('src="')[1:]), url
        assert "://" not in "".join(part.split('"')[0] for part in page.split('<link rel="stylesheet" href="')[1:])
    assert client.get("/static/vendor/htmx-2.0.11.min.js").status_code == 200


def test_an_off_site_current_url_never_becomes_the_page_to_come_back_to(client):
    response = client.get("/dashboard/services/", headers={
        "HX-Request": "true", "HX-Current-URL": "https://evil.example//evil.example/x"})

    assert response["HX-Redirect"] == "/dashboard/login/?next=/dashboard/"


def test_a_form_posted_after_the_session_expired_comes_back_to_its_page_not_to_the_post_url(client):
    response = client.post("/dashboard/pricing/aliyun-viapi/", {"price": "1"},
                           headers={"Referer": "http://testserver/dashboard/pricing/aliyun-viapi/"})

    assert response["Location"] == "/dashboard/login/?next=/dashboard/pricing/aliyun-viapi/"
    elsewhere = client.post("/dashboard/health/runs/", {}, headers={"Referer": "https://evil.example/x"})
    assert elsewhere["Location"] == "/dashboard/login/?next=/dashboard/"


def test_a_history_restore_gets_the_whole_page_and_answers_vary_on_htmx(client, operator):
    client.force_login(operator)

    partial = client.get("/dashboard/services/?q=face", headers={"HX-Request": "true"})
    restore = client.get("/dashboard/services/?q=face",
                         headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})

    assert b"<html" not in partial.content and b"<html" in restore.content
    assert "HX-Request" in partial["Vary"] and "HX-Request" in restore["Vary"]

"""The admin shows health data read-only, and the full check is switched on per service there."""

import pytest

from catalog.models import Service
from health import services
from health.probes import CheckOutcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    return client


def test_the_health_pages_list_runs_results_and_latest_health(staff):
    service = Service.objects.get(id="celebrity-recognition")
    run = services.health_run_start(trigger="command", service_ids=[service.id], enqueue=False)
    services.health_result_record(service=service, run=run, outcome=CheckOutcome("probe", "unhealthy", "AuthFailed"))

    assert staff.get("/admin/health/healthrun/").status_code == 200
    for path in ("/admin/health/healthcheckresult/", "/admin/health/servicehealth/"):
        assert "celebrity-recognition" in staff.get(path).content.decode()
    assert staff.get("/admin/health/healthrun/add/").status_code == 403


def test_an_operator_turns_the_full_check_on_in_the_service_form(staff):
    page = staff.get("/admin/catalog/service/celebrity-recognition/change/").content.decode()

    assert 'name="health_full_check"' in page

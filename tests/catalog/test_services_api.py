import pytest

from catalog.models import Service

pytestmark = pytest.mark.django_db


def test_it_lists_published_services(api):
    body = api.get("/api/services").json()
    assert body["total"] == 62 and len(body["services"]) == 62
    assert body["filters"] == {"state": "published", "limit": 100, "offset": 0}


def test_it_filters_by_category_and_pages(api):
    body = api.get("/api/services", {"category": "image-recognition", "limit": 5, "offset": 10}).json()
    assert body["total"] == 12
    assert [s["id"] for s in body["services"]] == ["vehicle-type-recognition", "waste-classification"]


def test_drafts_are_listed_for_operators_only(api, operator):
    draft = Service.objects.get(id="face-filter")
    draft.state = Service.State.DRAFT
    draft.save()
    response = api.get("/api/services", {"state": "draft"})
    assert (response.status_code, response.json()["error"]) == (403, "only operators can list draft services")
    api.force_login(operator)
    assert [s["id"] for s in api.get("/api/services", {"state": "draft"}).json()["services"]] == ["face-filter"]


@pytest.mark.parametrize("reference", ["celebrity-recognition", "aliyun-facebody-detect-celebrity",
                                       "celebrity_recognition"])
def test_one_service_by_either_id_or_its_tool_name(api, reference):
    body = api.get(f"/api/services/{reference}").json()
    assert (body["id"], body["internalServiceId"]) == ("celebrity-recognition", "aliyun-facebody-detect-celebrity")


def test_an_unknown_id_gets_404_with_the_closest_ids(api):
    response = api.get("/api/services/celebrity-recogniton")
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "service 'celebrity-recogniton' not found"
    assert body["closestIds"][0] == "celebrity-recognition"


def test_a_draft_is_not_found_by_id(api):
    service = Service.objects.get(id="face-filter")
    service.state = Service.State.DRAFT
    service.save()
    assert api.get("/api/services/face-filter").status_code == 404


@pytest.mark.parametrize("reference", ["Celebrity", "a" * 151, "face%20search", "..", "-leading-dash"])
def test_a_malformed_id_gets_400(api, reference):
    response = api.get(f"/api/services/{reference}")
    assert response.status_code == 400
    assert response.json()["error"] == "service_id: malformed service id: use lower-case letters, digits, '-' or '_'"


@pytest.mark.parametrize("params, message", [
    ({"state": "gone"}, 'state: "gone" is not a valid choice.'),
    ({"limit": 501}, "limit must be between 1 and 500"),
    ({"offset": -1}, "offset must be between 0 and 1000000"),
    ({"offset": "9" * 30}, "offset must be between 0 and 1000000"),
    ({"category": "weather"}, "category: unknown category 'weather'; known: face-body, image-recognition"),
])
def test_bad_list_filters_get_400(api, params, message):
    response = api.get("/api/services", params)
    assert (response.status_code, response.json()["error"]) == (400, message)


def test_operators_can_filter_drafts_by_a_category_only_drafts_have(api, operator):
    api.force_login(operator)
    service = Service.objects.get(id="face-filter")
    service.state, service.category = Service.State.DRAFT, "beauty"
    service.save()
    body = api.get("/api/services", {"state": "draft", "category": "beauty"}).json()
    assert [s["id"] for s in body["services"]] == ["face-filter"]


def test_write_methods_are_refused(api):
    assert api.post("/api/services", {}, format="json").status_code == 405
    assert api.delete("/api/services/celebrity-recognition").status_code == 405

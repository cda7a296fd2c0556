import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from catalog.models import PricingPolicy, Service
from catalog.openapi import openapi_document

pytestmark = pytest.mark.django_db

TOOL_STATUSES = {"200", "202", "400", "401", "402", "403", "404", "429", "502", "503", "504"}


def _document(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def _resolve(document: dict, item: dict) -> dict:
    """Follow a $ref to the component it names."""
    while "$ref" in item:
        _, kind, name = item["$ref"].removeprefix("#/").split("/")
        item = document["components"][kind][name]
    return item


def _validator(document: dict, schema: dict) -> Draft202012Validator:
    """A JSON Schema validator for `schema`, its $refs resolved inside the document."""
    return Draft202012Validator({**schema, "components": document["components"]})


def _tool_paths(document: dict) -> set[str]:
    return {path for path in document["paths"] if path.startswith("/api/tools/")}


def test_the_document_is_valid_openapi_3_1(client):
    document = _document(client)

    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_it_lists_one_path_per_published_tool_with_its_input_schema(client):
    document = _document(client)

    published = Service.objects.filter(state=Service.State.PUBLISHED)
    assert _tool_paths(document) == {f"/api/tools/{service.id}" for service in published}
    assert len(_tool_paths(document)) == 62
    service = Service.objects.get(id="celebrity-recognition")
    operation = document["paths"]["/api/tools/celebrity-recognition"]["post"]
    assert (operation["operationId"], operation["summary"]) == ("celebrity_recognition", service.name)
    assert operation["description"].startswith(service.description_for_model)
    body = operation["requestBody"]
    assert body["required"] is True
    # The input schema, closed as the server closes it: unknown parameters are refused.
    assert body["content"]["application/json"]["schema"] == {**service.input_schema, "additionalProperties": False}
    assert body["content"]["application/json"]["example"] == service.example_request
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == service.output_schema


def test_every_tool_answers_every_status_of_the_paid_call(client):
    document = _document(client)

    operations = [document["paths"][path]["post"] for path in _tool_paths(document)]
    assert all(set(operation["responses"]) == TOOL_STATUSES for operation in operations)
    operation = document["paths"]["/api/tools/scene-recognition"]["post"]
    assert _resolve(document, operation["responses"]["429"])["headers"]["Retry-After"]["required"] is True
    refusal = _resolve(document, operation["responses"]["404"])["content"]["application/json"]["schema"]
    assert _resolve(document, refusal)["required"] == ["error"]


def test_the_402_answer_and_its_headers_are_documented(client):
    document = _document(client)

    operation = document["paths"]["/api/tools/celebrity-recognition"]["post"]
    payment_required = _resolve(document, operation["responses"]["402"])
    headers = {name: _resolve(document, header) for name, header in payment_required["headers"].items()}
    assert headers["PAYMENT-REQUIRED"]["required"] and headers["X-Payment-Required"]["required"]
    assert headers["X-Payment-Required"]["schema"]["enum"] == ["true"]
    body = _resolve(document, payment_required["content"]["application/json"]["schema"])
    assert body["properties"]["type"]["const"] == "payment_required"
    assert {"type", "error", "payment", "paymentFlow", "retry"} <= set(body["required"])
    success = {name: _resolve(document, header) for name, header in operation["responses"]["200"]["headers"].items()}
    assert success["X-Payment-Remaining-Calls"]["required"] and "PAYMENT-RESPONSE" in success


def test_a_real_402_answer_matches_what_the_document_says(client):
    document = _document(client)

    response = client.post("/api/tools/celebrity-recognition", {"ImageURL": "https://example.com/face.jpg"},
                           content_type="application/json")

    assert response.status_code == 402
    payment_required = _resolve(document, document["paths"]["/api/tools/celebrity-recognition"]["post"]
                                ["responses"]["402"])
    schema = payment_required["content"]["application/json"]["schema"]
    assert not list(_validator(document, schema).iter_errors(response.json()))
    assert response["PAYMENT-REQUIRED"] and response["X-Payment-Required"] == "true"


def test_the_payment_headers_and_api_keys_are_documented_and_a_key_is_optional(client):
    document = _document(client)

    operation = document["paths"]["/api/tools/celebrity-recognition"]["post"]
    headers = {_resolve(document, parameter)["name"]: _resolve(document, parameter)
               for parameter in operation["parameters"]}
    assert set(headers) == {"PAYMENT-SIGNATURE", "X-Payment-Token", "Prefer"}
    assert not any(header.get("required") for header in headers.values())
    # `{}` first: calling without any key is how a client gets its 402.
    assert operation["security"] == [{}, {"apiKeyBearer": []}, {"apiKeyHeader": []}]
    schemes = document["components"]["securitySchemes"]
    assert (schemes["apiKeyBearer"]["type"], schemes["apiKeyBearer"]["scheme"]) == ("http", "bearer")
    assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == ("header", "X-API-Key")


def test_a_tool_whose_policy_requires_an_api_key_says_so(client):
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.require_api_key = True
    policy.save()

    operation = _document(client)["paths"]["/api/tools/celebrity-recognition"]["post"]

    assert operation["security"] == [{"apiKeyBearer": []}, {"apiKeyHeader": []}]
    assert "An API key is required." in operation["description"]


def _routes(patterns, prefix=""):
    """(route, view) of every URL pattern, includes walked."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.callback


def _methods(view) -> set[str]:
    view_class = getattr(view, "view_class", None) or getattr(view, "cls", None)
    if view_class is None:
        return set()
    return {method for method in view_class.http_method_names
            if hasattr(view_class, method) and method not in ("head", "options")}


def test_every_api_route_of_the_project_is_documented(client):
    document = _document(client)

    api_routes = [(route, view) for route, view in _routes(get_resolver().url_patterns) if route.startswith("api/")]
    assert len(api_routes) >= 7
    for route, view in api_routes:
        # <str:service_id> matches a concrete tool path as well as a {service_id} template.
        pattern = re.sub(r"<(?:\w+:)?\w+>", "[^/]+", "/" + route)
        documented = [path for path in document["paths"] if re.fullmatch(pattern, path)]
        assert documented, f"/{route} is not in /openapi.json"
        for method in _methods(view):
            assert any(method in document["paths"][path] for path in documented), f"{method} /{route} undocumented"


def test_it_documents_only_the_api(client):
    paths = _document(client)["paths"]

    assert all(path.startswith("/api/") for path in paths)
    assert not any(re.search(r"mcp|dashboard|admin|sandbox", path) for path in paths)


def test_the_servers_url_follows_public_base_url(client, settings):
    settings.PUBLIC_BASE_URL = "https://tools.example.com"

    document = _document(client)

    assert document["servers"][0]["url"] == "https://tools.example.com"


def test_an_unpublished_service_leaves_the_document(client):
    assert "/api/tools/face-filter" in _document(client)["paths"]
    service = Service.objects.get(id="face-filter")
    service.state = Service.State.DRAFT
    service.save()

    paths = _document(client)["paths"]

    assert "/api/tools/face-filter" not in paths and len(_tool_paths({"paths": paths})) == 61


def test_a_disabled_service_stays_documented_and_says_it_answers_503(client):
    service = Service.objects.get(id="face-filter")
    service.enabled = False
    service.save()

    operation = _document(client)["paths"]["/api/tools/face-filter"]["post"]

    assert "calls answer 503" in operation["description"]


def test_an_edited_service_shows_up_in_the_next_document(client):
    before = _document(client)
    service = Service.objects.get(id="celebrity-recognition")
    service.name = "Celebrity finder"
    service.input_schema = {**service.input_schema, "properties": {
        **service.input_schema["properties"], "MaxFaces": {"type": "integer", "minimum": 1}}}
    service.category = "people"
    service.save()

    after = _document(client)

    operation = after["paths"]["/api/tools/celebrity-recognition"]["post"]
    assert before["paths"]["/api/tools/celebrity-recognition"]["post"]["summary"] != "Celebrity finder"
    assert operation["summary"] == "Celebrity finder" and operation["tags"] == ["people"]
    assert "MaxFaces" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
    categories = {parameter["name"]: parameter["schema"] for parameter in after["paths"]["/api/catalog/search"]
                  ["get"]["parameters"]}["category"]["enum"]
    assert "people" in categories


def test_a_price_change_shows_up_in_the_next_document(client):
    _document(client)
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.amount_cents = 35
    policy.save()

    operation = _document(client)["paths"]["/api/tools/celebrity-recognition"]["post"]

    assert "USD 0.35" in operation["description"] and operation["x-server402-pricing"]["amountCents"] == 35


def test_an_unchanged_catalog_is_served_from_the_cache(client, django_assert_num_queries):
    first = client.get("/openapi.json").content

    # One query: the catalog version, to see that nothing changed.
    with django_assert_num_queries(1):
        second = client.get("/openapi.json").content

    assert second == first


def test_generating_the_document_raises_no_drf_spectacular_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()
    with GENERATOR_STATS.silence():
        openapi_document()

    assert not GENERATOR_STATS, (dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache))


# Found while making the document exact; the schemathesis run (test_openapi_fuzz.py) checks them too.


def test_a_payment_id_the_database_cannot_store_is_simply_not_found(client):
    # PostgreSQL refuses NUL in text: the lookup itself used to fail with a 500.
    response = client.get("/api/payments/pay_%00" + "a" * 31)

    assert (response.status_code, response.json()) == (404, {"error": "payment not found"})


def test_asking_for_drafts_anonymously_is_refused_before_their_categories_are_listed(client):
    service = Service.objects.get(id="face-filter")
    service.state, service.category = Service.State.DRAFT, "beauty"
    service.save()

    response = client.get("/api/services", {"state": "draft", "category": "face-body"})

    assert (response.status_code, response.json()) == (403, {"error": "only operators can list draft services"})

"""Discovery for agents: `/.well-known/x402`, and the links llms.txt and the service pages give."""

import json

import httpx
import pytest
from django.conf import settings
from django.test import override_settings
from x402.extensions.bazaar import validate_discovery_extension, validate_discovery_extension_spec, with_bazaar
from x402.http import FacilitatorConfig, HTTPFacilitatorClientSync

from catalog.models import PricingPolicy, Service
from catalog.selectors import callable_services

pytestmark = pytest.mark.django_db

BASE = "https://tools.example.org"
WELL_KNOWN = "/.well-known/x402"


def _document(client) -> dict:
    response = client.get(WELL_KNOWN)
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def _items(document: dict, kind: str) -> dict[str, dict]:
    """The document's items of one type, by service id (the HTTP URL's last part, or the MCP tool name)."""
    if kind == "http":
        return {item["resource"].rsplit("/", 1)[1]: item for item in document["items"] if item["type"] == "http"}
    return {item["extensions"]["bazaar"]["info"]["input"]["toolName"].replace("_", "-"): item
            for item in document["items"] if item["type"] == "mcp"}


def test_it_lists_every_published_tool_with_its_accepts(client, api):
    document = _document(client)
    http = _items(document, "http")
    assert len(http) == Service.objects.count() == 62
    for service in Service.objects.all():
        unpaid = api.post(f"/api/tools/{service.id}", service.example_request, format="json")
        assert unpaid.status_code == 402, (service.id, unpaid.json())
        body = unpaid.json()
        item = http[service.id]
        # The offer, the resource and the bazaar block are the 402's own, field for field.
        assert item["accepts"] == body["accepts"] and item["accepts"]
        assert item["resource"] == body["resource"]["url"]
        assert item["extensions"] == body["extensions"]
        assert item["x402Version"] == body["x402Version"] == 2
        assert item["serviceName"] == body["resource"]["serviceName"]


def _edit(service_id: str, **fields) -> None:
    # Through save(), as the dashboard and the admin do: it stamps updated_at, which tells the cache.
    service = Service.objects.get(id=service_id)
    for name, value in fields.items():
        setattr(service, name, value)
    service.save()


def test_an_unpublished_or_disabled_tool_is_absent(client):
    _document(client)
    _edit("face-filter", state=Service.State.DRAFT)
    _edit("face-search", enabled=False)
    document = _document(client)
    listed = {url.rsplit("/", 1)[1] for url in document["resources"]}
    assert "face-filter" not in listed and "face-search" not in listed
    assert listed == set(callable_services().values_list("id", flat=True)) and len(listed) == 60
    for kind in ("http", "mcp"):
        assert set(_items(document, kind)) == listed
    assert document["pagination"] == {"limit": 120, "offset": 0, "total": 120}


def test_each_tool_is_listed_as_its_mcp_tool_too_with_what_an_unpaid_mcp_call_offers(client):
    document = _document(client)
    http, mcp = _items(document, "http"), _items(document, "mcp")
    service = Service.objects.get(id="celebrity-recognition")
    item = mcp[service.id]
    assert item["resource"] == f"{settings.PUBLIC_BASE_URL}/mcp"
    bazaar = item["extensions"]["bazaar"]
    assert bazaar["info"]["input"] == {
        "type": "mcp", "toolName": "celebrity_recognition", "description": service.description_for_model,
        "transport": "streamable-http", "inputSchema": service.input_schema, "example": service.example_request,
    }
    assert bazaar["info"]["output"] == {"type": "json", "example": service.example_response}
    for service in Service.objects.all():
        item = mcp[service.id]
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": service.tool_name, "arguments": service.example_request}}
        unpaid = client.post("/mcp", call, content_type="application/json",
                             HTTP_ACCEPT="application/json, text/event-stream").json()["result"]
        assert unpaid["isError"] is True
        # The MCP tool's own 402: the same offer, and the same bazaar block as the document lists.
        assert item["accepts"] == unpaid["structuredContent"]["accepts"] == http[service.id]["accepts"]
        assert item["extensions"] == unpaid["structuredContent"]["extensions"]
        # What a facilitator checks before cataloguing a resource.
        assert validate_discovery_extension(item["extensions"]["bazaar"]).valid, service.id
        assert validate_discovery_extension_spec(item["extensions"]["bazaar"]).valid, service.id


def test_it_is_the_fan_out_document_x402scan_reads(client):
    """x402scan's docs/DISCOVERY.md: `{version: 1, resources: [url, ...], instructions?}`."""
    document = _document(client)
    assert document["version"] == 1
    assert all(isinstance(url, str) and url.startswith("http") for url in document["resources"])
    assert [item["resource"] for item in document["items"] if item["type"] == "http"] == document["resources"]
    assert document["resources"] == sorted(document["resources"])
    for link in ("/mcp", "/openapi.json", "/llms.txt", "/api/tools/<serviceId>", "search_services",
                 '_meta["x402/payment"]', "paymentToken"):
        assert link in document["instructions"]


def test_the_sdks_bazaar_client_reads_its_items_as_a_discovery_list(client):
    """The items and their envelope are the facilitator list's, as the official SDK parses it."""
    body = client.get(WELL_KNOWN).content
    # The SDK asks a facilitator's /discovery/resources; here it is answered with our document.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    facilitator = HTTPFacilitatorClientSync(FacilitatorConfig(url=BASE, http_client=httpx.Client(transport=transport)))
    listed = with_bazaar(facilitator).extensions.bazaar.list_resources()
    document = json.loads(body)
    assert listed.x402_version == 2 and listed.pagination.total == len(listed.items) == 124
    assert [resource.to_dict() for resource in listed.items] == document["items"]


@override_settings(PUBLIC_BASE_URL=BASE)
def test_its_urls_follow_the_public_base_url(client):
    response = client.get(WELL_KNOWN)
    document = response.json()
    assert {url.rsplit("/", 1)[0] for url in document["resources"]} == {f"{BASE}/api/tools"}
    assert {item["resource"] for item in document["items"] if item["type"] == "mcp"} == {f"{BASE}/mcp"}
    assert f"{BASE}/openapi.json" in document["instructions"]
    text = response.content.decode()
    assert "localhost" not in text and "testserver" not in text


def test_a_price_only_a_token_can_pay_is_not_sent_to_x402_crawlers(client):
    """x402 prices in USD; a tool priced otherwise is sold by token only, and its 402 has no accepts[]."""
    _edit("face-filter", pricing_policy=PricingPolicy.objects.create(id="yuan", amount_cents=150, currency="CNY"))
    document = _document(client)
    assert _items(document, "http")["face-filter"]["accepts"] == []
    assert not any(url.endswith("/face-filter") for url in document["resources"])
    assert len(document["resources"]) == 61


def test_it_is_public_cacheable_and_read_only(client):
    response = client.get(WELL_KNOWN)
    assert response["Access-Control-Allow-Origin"] == "*"
    assert set(response["Cache-Control"].split(", ")) == {"public", "max-age=300"}
    assert client.head(WELL_KNOWN).status_code == 200
    assert client.get(WELL_KNOWN, HTTP_ACCEPT_ENCODING="gzip")["Content-Encoding"] == "gzip"
    assert client.post(WELL_KNOWN).status_code == 405


def test_it_costs_the_same_few_queries_however_many_tools(client, django_assert_max_num_queries,
                                                          django_assert_num_queries):
    # After an edit: the catalog version, then every callable service with its policy; nothing per tool.
    _edit("face-filter", name="Face Filter")
    with django_assert_max_num_queries(2):
        assert len(_document(client)["resources"]) == 62
    # Unchanged since: the catalog version only.
    with django_assert_num_queries(1):
        assert len(_document(client)["resources"]) == 62


def test_a_price_change_shows_at_once(client):
    assert {item["accepts"][0]["amount"] for item in _document(client)["items"]} == {"200000"}
    policy = PricingPolicy.objects.get(id="aliyun-viapi")
    policy.amount_cents = 35
    policy.save()
    assert {item["accepts"][0]["amount"] for item in _document(client)["items"]} == {"350000"}


# --- Links for agents -------------------------------------------------------------------


@override_settings(PUBLIC_BASE_URL=BASE)
def test_llms_txt_links_the_mcp_endpoint_openapi_and_the_x402_discovery(client):
    text = client.get("/llms.txt").content.decode()
    assert f"- MCP endpoint (Streamable HTTP): {BASE}/mcp." in text
    for line in [f"- OpenAPI 3.1: {BASE}/openapi.json", f"{BASE}/.well-known/x402", "`celebrity_recognition`",
                 "`search_services`", '`_meta["x402/payment"]`', "`paymentToken`",
                 "MCP tool `celebrity_recognition`."]:
        assert line in text


@override_settings(PUBLIC_BASE_URL=BASE)
def test_the_markdown_page_links_mcp_and_openapi_and_says_how_to_pay_over_mcp(client):
    text = client.get("/services/celebrity-recognition.md").content.decode()
    for line in [f"- OpenAPI: {BASE}/openapi.json", f"- MCP endpoint: {BASE}/mcp",
                 "- MCP tool: `celebrity_recognition`", f"- x402 discovery: {BASE}/.well-known/x402",
                 f"- Paying over MCP: call `celebrity_recognition` at {BASE}/mcp;", '`_meta["x402/payment"]`',
                 "`paymentToken` argument", '`_meta["x402/payment-response"]`']:
        assert line in text


@override_settings(PUBLIC_BASE_URL=BASE)
def test_the_html_page_shows_the_same_links(client):
    page = client.get("/services/celebrity-recognition").content.decode()
    for fragment in [f"<code>{BASE}/mcp</code>", "<code>celebrity_recognition</code>",
                     f'<a href="{BASE}/openapi.json">', f'<a href="{BASE}/.well-known/x402">',
                     '<code>_meta["x402/payment"]</code>', "<code>paymentToken</code>"]:
        assert fragment in page

"""/mcp, message by message: the protocol in each version, the tools, and every refusal with the spec's answer.

Results are checked against the official MCP schema of the version spoken (mcp_types, from the `mcp` SDK).
"""

import json
from types import SimpleNamespace

import pytest
from eth_account import Account
from mcp_types.methods import validate_server_result
from x402 import x402ClientSync
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.schemas import parse_payment_required

from catalog.models import Service
from payments.models import Payment, ToolCall, X402Authorization

pytestmark = pytest.mark.django_db

BODY = {"ImageURL": "https://example.com/face.jpg"}
MODERN = "2026-07-28"
CLIENT_META = {"io.modelcontextprotocol/protocolVersion": MODERN,
               "io.modelcontextprotocol/clientCapabilities": {}}


def post(client, body, headers=None, content_type="application/json"):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/mcp", raw, content_type=content_type, headers=headers or {})


def rpc(client, method, params=None, *, version="2025-11-25", headers=None, id=1):
    message = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return post(client, message, {"MCP-Protocol-Version": version, **(headers or {})})


def modern(client, method, params=None, *, headers=None):
    params = {**(params or {}), "_meta": {**CLIENT_META, **(params or {}).get("_meta", {})}}
    routing = {"Mcp-Method": method, **({"Mcp-Name": params["name"]} if method == "tools/call" else {})}
    return rpc(client, method, params, version=MODERN, headers={**routing, **(headers or {})})


def result(response, method, version):
    assert response.status_code == 200, response.content
    answer = response.json()
    assert "error" not in answer, answer
    validate_server_result(method, version, answer["result"])
    return answer["result"]


def error(response, status, code):
    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["error"]["code"] == code, answer
    return answer


def call(client, name, arguments, *, meta=None, version="2025-11-25", headers=None):
    params = {"name": name, **({"arguments": arguments} if arguments is not None else {}),
              **({"_meta": meta} if meta else {})}
    return result(rpc(client, "tools/call", params, version=version, headers=headers), "tools/call", version)


@pytest.fixture
def buyer(make_key, paid_token):
    """A key's paid one-call token for celebrity_recognition, its bearer header, and a check it was not used."""
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)

    def untouched():
        payment.refresh_from_db()
        assert payment.used_calls == 0
        assert not ToolCall.objects.exists() and not X402Authorization.objects.exists()

    return SimpleNamespace(token=token, headers={"Authorization": f"Bearer {secret}"}, untouched=untouched)


@pytest.fixture
def nothing_charged():
    before = (Payment.objects.count(), ToolCall.objects.count(), X402Authorization.objects.count())
    yield
    assert (Payment.objects.count(), ToolCall.objects.count(), X402Authorization.objects.count()) == before


# --- The handshake era ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
def test_it_initializes_at_each_handshake_version_it_serves(client, version):
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    answer = result(rpc(client, "initialize", params, version=version), "initialize", version)

    assert answer["protocolVersion"] == version
    assert answer["capabilities"] == {"tools": {"listChanged": False}}
    assert answer["serverInfo"]["name"] == "server402"
    assert "sandbox mode" in answer["instructions"]


def test_it_answers_an_older_or_unknown_version_with_its_newest_handshake_version(client):
    params = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    response = post(client, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})

    assert response.json()["result"]["protocolVersion"] == "2025-11-25"


def test_it_acknowledges_notifications_with_202_and_no_body(client):
    response = post(client, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"MCP-Protocol-Version": "2025-11-25"})

    assert response.status_code == 202 and response.content == b""


def test_it_answers_ping(client):
    assert result(rpc(client, "ping"), "ping", "2025-11-25") == {}


@pytest.mark.parametrize("method", ["get", "delete"])
def test_it_refuses_streams_and_sessions_with_405(client, method):
    response = getattr(client, method)("/mcp")

    assert response.status_code == 405 and response["Allow"] == "POST"


def test_it_refuses_a_foreign_origin_with_403_and_accepts_its_own(client, settings):
    settings.PUBLIC_BASE_URL = "https://server402.example"

    refused = rpc(client, "ping", headers={"Origin": "https://evil.example"})
    own = rpc(client, "ping", headers={"Origin": "https://server402.example"})
    settings.MCP_ALLOWED_ORIGINS = ["https://inspector.example"]
    listed = rpc(client, "ping", headers={"Origin": "https://inspector.example"})

    assert refused.status_code == 403 and refused.json()["error"]["message"].startswith("Origin is not allowed")
    assert own.status_code == listed.status_code == 200


def test_it_refuses_what_is_not_json_rpc_over_json(client):
    assert post(client, "{", {"MCP-Protocol-Version": "2025-11-25"}).json() == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error: the body is not JSON"}}
    error(post(client, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, content_type="text/plain"), 415, -32600)
    error(client.post("/mcp", "{}", content_type="application/json", headers={"Accept": "text/event-stream"}),
          406, -32600)
    error(post(client, "3", {"MCP-Protocol-Version": "2025-11-25"}), 400, -32600)
    error(post(client, {"id": 1, "method": "ping"}), 400, -32600)
    error(post(client, {"jsonrpc": "2.0", "id": 1, "method": 7}), 400, -32600)
    error(post(client, {"jsonrpc": "2.0", "id": None, "method": "ping"}), 400, -32600)
    error(post(client, {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}), 400, -32600)
    assert error(rpc(client, "resources/list"), 200, -32601)["id"] == 1


@pytest.mark.parametrize("version", ["2099-01-01", "2024-11-05", "junk"])
def test_it_refuses_a_protocol_version_it_does_not_serve(client, version, buyer):
    params = {"name": "celebrity_recognition", "arguments": {**BODY, "paymentToken": buyer.token}}
    answer = error(rpc(client, "tools/call", params, version=version, headers=buyer.headers), 400, -32022)

    assert answer["error"]["data"] == {"requested": version, "supported": [
        "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]}
    buyer.untouched()


def test_it_refuses_a_request_over_its_size_limit(client, buyer):
    arguments = {**BODY, "paymentToken": buyer.token, "pad": "x" * 1_000_000}
    response = rpc(client, "tools/call", {"name": "celebrity_recognition", "arguments": arguments},
                   headers=buyer.headers)

    assert error(response, 413, -32600)["error"]["message"].startswith("request body is too large")
    buyer.untouched()


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", MODERN])
def test_it_refuses_batches_after_2025_03_26(client, version):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]

    answer = error(post(client, batch, {"MCP-Protocol-Version": version}), 400, -32600)

    assert "batches are not allowed" in answer["error"]["message"]


def test_it_answers_a_2025_03_26_batch_item_by_item(client):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope"}},
    ]

    answers = post(client, batch).json()

    assert [(a["id"], a.get("result"), a.get("error", {}).get("code")) for a in answers] == [
        (1, {}, None), (2, None, -32600), (3, None, -32602)]
    error(post(client, []), 400, -32600)
    error(post(client, [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(21)]), 400, -32600)


# --- The stateless era (2026-07-28) -------------------------------------------------


def test_it_discovers_without_a_handshake(client):
    answer = result(modern(client, "server/discover"), "server/discover", MODERN)

    assert answer["supportedVersions"] == ["2025-03-26", "2025-06-18", "2025-11-25", MODERN]
    assert answer["resultType"] == "complete" and answer["cacheScope"] == "public" and answer["ttlMs"] == 300_000
    assert answer["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "server402"


def test_it_stamps_results_and_lists_with_their_cache_hints(client):
    listed = result(modern(client, "tools/list"), "tools/list", MODERN)
    called = result(modern(client, "tools/call", {"name": "search_services", "arguments": {"query": "face"}}),
                    "tools/call", MODERN)

    assert listed["resultType"] == called["resultType"] == "complete"
    assert (listed["ttlMs"], listed["cacheScope"]) == (300_000, "public")


def test_it_refuses_a_stateless_request_without_its_envelope(client):
    response = rpc(client, "tools/list", {}, version=MODERN, headers={"Mcp-Method": "tools/list"})

    assert "params._meta must carry" in error(response, 400, -32602)["error"]["message"]


@pytest.mark.parametrize(("headers", "message"), [
    ({"MCP-Protocol-Version": None}, "MCP-Protocol-Version header does not match"),
    ({"Mcp-Method": "tools/list"}, "Mcp-Method header does not match"),
    ({"Mcp-Method": None}, "Mcp-Method header does not match"),
    ({"Mcp-Name": "scene_recognition"}, "Mcp-Name header does not match"),
])
def test_it_refuses_headers_that_disagree_with_the_body(client, headers, message, buyer):
    params = {"name": "celebrity_recognition", "arguments": {**BODY, "paymentToken": buyer.token},
              "_meta": CLIENT_META}
    routing = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": "celebrity_recognition",
               **headers}
    response = post(client, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
                    {**buyer.headers, **{name: value for name, value in routing.items() if value is not None}})

    assert message in error(response, 400, -32020)["error"]["message"]
    buyer.untouched()


def test_it_refuses_an_envelope_naming_a_version_it_does_not_serve(client):
    meta = {**CLIENT_META, "io.modelcontextprotocol/protocolVersion": "2027-01-01"}
    response = post(client, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
                    {"MCP-Protocol-Version": "2027-01-01", "Mcp-Method": "tools/list"})

    error(response, 400, -32022)


@pytest.mark.parametrize("method", ["initialize", "ping"])
def test_it_answers_a_method_the_stateless_era_dropped_with_404(client, method):
    error(modern(client, method), 404, -32601)


# --- Tools --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25", MODERN])
def test_it_lists_every_published_service_as_a_valid_tool(client, version):
    listed = result(modern(client, "tools/list") if version == MODERN else rpc(client, "tools/list", version=version),
                    "tools/list", version)
    tools = {tool["name"]: tool for tool in listed["tools"]}

    published = set(Service.objects.filter(state="published", enabled=True).values_list("id", flat=True))
    assert set(tools) == {service_id.replace("-", "_") for service_id in published} | {"search_services",
                                                                                         "get_job_result"}
    celebrity = tools["celebrity_recognition"]
    assert celebrity["title"] == Service.objects.get(id="celebrity-recognition").name
    assert "USD 0.20 per call" in celebrity["description"]
    assert celebrity["inputSchema"]["required"] == ["ImageURL"]
    assert celebrity["inputSchema"]["properties"]["paymentToken"]["type"] == "string"
    envelope, payment_required, job_accepted = celebrity["outputSchema"]["anyOf"]
    assert envelope["required"] == ["requestId", "data"]
    assert payment_required["properties"]["status"]["const"] == "payment_required"
    assert "jobSecret" in job_accepted["required"]
    assert celebrity["annotations"] == {"title": celebrity["title"], "readOnlyHint": True, "destructiveHint": False,
                                        "idempotentHint": True, "openWorldHint": True}
    hints = {name: (tools[name]["annotations"]["readOnlyHint"], tools[name]["annotations"]["destructiveHint"])
             for name in ("face_database_delete_face", "face_database_update_entity", "face_database_add_face",
                          "face_database_list")}
    assert hints == {"face_database_delete_face": (False, True), "face_database_update_entity": (False, True),
                     "face_database_add_face": (False, False), "face_database_list": (True, False)}


def test_it_pages_the_tool_list_with_an_opaque_cursor(client, settings):
    whole = [tool["name"] for tool in result(rpc(client, "tools/list"), "tools/list", "2025-11-25")["tools"]]
    settings.MCP_TOOLS_PAGE_SIZE = 10
    pages, cursor = [], None
    while True:
        page = result(rpc(client, "tools/list", {"cursor": cursor} if cursor else {}), "tools/list", "2025-11-25")
        pages.append([tool["name"] for tool in page["tools"]])
        cursor = page.get("nextCursor")
        if not cursor:
            break

    assert [name for page in pages for name in page] == whole == sorted(whole)
    assert [len(page) for page in pages] == [10] * (len(whole) // 10) + [len(whole) % 10]
    error(rpc(client, "tools/list", {"cursor": "not a cursor"}), 200, -32602)
    error(rpc(client, "tools/list", {"cursor": 5}), 200, -32602)


def test_the_tool_list_follows_the_catalog(client):
    service = Service.objects.get(id="celebrity-recognition")
    service.state = Service.State.DRAFT
    service.save()

    names = [tool["name"] for tool in result(rpc(client, "tools/list"), "tools/list", "2025-11-25")["tools"]]

    assert "celebrity_recognition" not in names
    assert error(rpc(client, "tools/call", {"name": "celebrity_recognition", "arguments": BODY}), 200, -32602)


def test_search_services_is_free_and_answers_like_the_catalog_search(client, nothing_charged):
    answer = call(client, "search_services", {"query": "明星识别", "limit": 3})

    assert not answer["isError"]
    found = answer["structuredContent"]
    assert found["schemaVersion"] == "server402.catalog.search.v1" and len(found["services"]) == 3
    assert found["services"][0]["id"] == "celebrity-recognition"
    assert json.loads(answer["content"][0]["text"]) == found


def test_search_services_refuses_bad_arguments_with_the_http_messages(client, api):
    http = api.get("/api/catalog/search", {"q": "face", "limit": 0}).json()

    refused = call(client, "search_services", {"query": "face", "limit": 0})
    unknown = call(client, "search_services", {"query": "face", "colour": "red"})

    assert refused["isError"] and refused["structuredContent"]["error"] == http["error"]
    assert unknown["isError"] and unknown["structuredContent"]["error"].startswith("unknown argument 'colour'")


def test_an_unpaid_call_is_payment_required_with_x402_accepts_and_the_same_json_as_text(client, api,
                                                                                         nothing_charged):
    http = api.post("/api/tools/celebrity-recognition", BODY, format="json")

    answer = call(client, "celebrity_recognition", BODY)

    assert answer["isError"] is True
    unpaid = answer["structuredContent"]
    assert json.loads(answer["content"][0]["text"]) == unpaid
    assert unpaid["status"] == "payment_required" and unpaid["type"] == "payment_required"
    assert unpaid["accepts"] == http.json()["accepts"] and unpaid["x402Version"] == 2
    assert unpaid["payment"]["amountCents"] == 20 and "retry" in unpaid and "paymentFlow" in unpaid
    assert parse_payment_required(unpaid).accepts[0].amount == "200000"
    bazaar = unpaid["extensions"]["bazaar"]["info"]["input"]
    assert (bazaar["type"], bazaar["toolName"], bazaar["transport"]) == ("mcp", "celebrity_recognition",
                                                                          "streamable-http")


def test_input_errors_are_tool_errors_with_the_http_messages(client, api, buyer):
    for arguments in ({}, {"ImageURL": "not-a-url"}, {"ImageURL": 5}, {**BODY, "Extra": 1}):
        http = api.post("/api/tools/celebrity-recognition", arguments, format="json").json()

        answer = call(client, "celebrity_recognition", {**arguments, "paymentToken": buyer.token},
                      headers=buyer.headers)

        assert answer["isError"] is True
        assert answer["structuredContent"]["error"] == http["error"]
        assert answer["structuredContent"]["httpStatus"] == 400
    buyer.untouched()


@pytest.mark.parametrize("version", ["2025-11-25", MODERN])
def test_it_answers_an_unknown_tool_with_invalid_params(client, version):
    params = {"name": "no_such_tool", "arguments": {}}
    response = modern(client, "tools/call", params) if version == MODERN else rpc(client, "tools/call", params)

    answer = error(response, 400 if version == MODERN else 200, -32602)

    assert answer["error"]["message"].startswith("unknown tool 'no_such_tool'")


@pytest.mark.parametrize("arguments", [[], "ImageURL", 3])
def test_it_answers_arguments_that_are_not_an_object_with_invalid_params(client, arguments, upstream_emulator):
    payment = _payload(client)
    params = {"name": "celebrity_recognition", "arguments": arguments, "_meta": {"x402/payment": payment}}

    assert error(rpc(client, "tools/call", params), 200, -32602)["error"]["message"] == \
        "params.arguments must be an object"
    assert not X402Authorization.objects.exists() and not ToolCall.objects.exists()
    # The payment was not spent: it still pays for a call.
    assert not call(client, "celebrity_recognition", BODY, meta={"x402/payment": payment})["isError"]


def test_a_token_pays_and_a_token_of_another_tool_does_not(client, make_key, paid_token, upstream_emulator):
    key, secret = make_key()
    _, token = paid_token("scene-recognition", key)
    bearer = {"Authorization": f"Bearer {secret}"}

    refused = call(client, "celebrity_recognition", {**BODY, "paymentToken": token}, headers=bearer)
    paid = call(client, "scene_recognition", {"ImageURL": "https://example.com/a.jpg", "paymentToken": token},
                headers=bearer)

    assert refused["isError"] and refused["structuredContent"]["status"] == "payment_required"
    assert refused["structuredContent"]["error"] == "payment token is for another service"
    assert not paid["isError"] and paid["structuredContent"]["data"]["Action"] == "RecognizeScene"
    assert paid["_meta"]["server402/remaining-calls"] == 0
    assert Payment.objects.get().used_calls == 1


def test_a_token_that_is_not_a_string_is_an_input_error(client, nothing_charged):
    answer = call(client, "celebrity_recognition", {**BODY, "paymentToken": 5})

    assert answer["isError"] and answer["structuredContent"]["error"] == "paymentToken must be a string"


def _payload(client, *, account=None, **accepted_changes) -> dict:
    unpaid = call(client, "celebrity_recognition", BODY)["structuredContent"]
    payer = x402ClientSync()
    payer.register("eip155:*", ExactEvmClientScheme(signer=account or Account.create()))
    payload = payer.create_payment_payload(parse_payment_required(unpaid)).model_dump(by_alias=True,
                                                                                      exclude_none=True)
    payload["accepted"].update(accepted_changes)
    return payload


def test_an_x402_payment_in_meta_pays_once_and_its_receipt_comes_back(client, upstream_emulator):
    account = Account.create()
    payload = _payload(client, account=account)

    paid = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payload})
    replayed = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payload})

    assert not paid["isError"] and paid["structuredContent"]["data"]["Action"] == "DetectCelebrity"
    receipt = paid["_meta"]["x402/payment-response"]
    assert receipt["success"] is True and receipt["payer"] == account.address and receipt["transaction"]
    assert replayed["isError"]
    assert replayed["structuredContent"]["invalidReason"] == "invalid_exact_evm_nonce_already_used"
    assert X402Authorization.objects.get().status == "settled"


def test_a_payment_for_another_network_is_refused_before_anything_is_charged(client, nothing_charged):
    payload = _payload(client, network="eip155:8453")

    answer = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payload})

    assert answer["isError"] and answer["structuredContent"]["status"] == "payment_required"
    assert answer["structuredContent"]["invalidReason"] == "network_mismatch"
    assert "network eip155:8453" in answer["structuredContent"]["error"]


@pytest.mark.parametrize(("payment", "message"), [
    ("not an object", '_meta["x402/payment"] must hold a JSON object'),
    ({"x402Version": 2}, '_meta["x402/payment"] is not an x402 v2 PaymentPayload'),
    ({"payload": {}}, '_meta["x402/payment"] has no x402Version'),
])
def test_a_malformed_payment_in_meta_is_payment_required_naming_it(client, payment, message, nothing_charged):
    answer = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payment})

    # x402's MCP transport has no 400: an unreadable payment is answered like one that does not pay.
    refused = answer["structuredContent"]
    assert answer["isError"] and refused["status"] == "payment_required" and refused["accepts"]
    assert refused["invalidReason"] == "invalid_payload" and refused["error"].startswith(message)


def test_meta_that_is_not_an_object_is_invalid_params(client):
    response = rpc(client, "tools/call", {"name": "celebrity_recognition", "arguments": BODY, "_meta": "x"})

    error(response, 200, -32602)


def test_a_disabled_tool_says_so_and_charges_nothing(client, buyer):
    Service.objects.filter(id="celebrity-recognition").update(enabled=False)

    answer = call(client, "celebrity_recognition", {**BODY, "paymentToken": buyer.token}, headers=buyer.headers)

    assert answer["isError"] and answer["structuredContent"]["httpStatus"] == 503
    assert "disabled by the operator" in answer["structuredContent"]["error"]
    buyer.untouched()


def test_an_api_key_is_read_from_the_http_headers(client, buyer):
    answer = call(client, "celebrity_recognition", {**BODY, "paymentToken": buyer.token},
                  headers={"Authorization": "Bearer s402_nope"})

    assert answer["isError"] and answer["structuredContent"]["httpStatus"] == 401
    buyer.untouched()


def test_a_call_without_arguments_asks_for_the_price_and_with_a_token_is_bad_input(client, nothing_charged):
    unpaid = call(client, "celebrity_recognition", None)
    with_token = call(client, "celebrity_recognition", {"paymentToken": "pt_whatever"})

    assert unpaid["isError"] and unpaid["structuredContent"]["status"] == "payment_required"
    assert with_token["isError"] and with_token["structuredContent"]["error"] == "ImageURL is required"


def test_a_failed_settlement_withholds_the_result_and_reports_inside_the_payment_required(client, upstream_emulator,
                                                                                          monkeypatch):
    from x402.schemas import SettleResponse

    from payments import facilitators

    real = facilitators.facilitator()

    class Refusing:
        name = real.name
        verify = real.verify

        def settle(self, payload, requirements):
            return SettleResponse(success=False, error_reason="insufficient_funds", transaction="",
                                  network=requirements.network)

    payment = _payload(client)
    monkeypatch.setattr(facilitators, "facilitator", lambda: Refusing())

    answer = call(client, "celebrity_recognition", BODY, meta={"x402/payment": payment})

    refused = answer["structuredContent"]
    assert answer["isError"] and refused["status"] == "payment_required" and "data" not in refused
    assert refused["x402/payment-response"] == answer["_meta"]["x402/payment-response"]
    assert refused["x402/payment-response"]["success"] is False
    assert refused["invalidReason"] == "insufficient_funds"
    assert ToolCall.objects.get().outcome == "settlement_failed"


@pytest.mark.parametrize("version", [MODERN, "2099-01-01"])
def test_notifications_in_the_stateless_era_are_acknowledged_only_at_a_served_version(client, version):
    response = post(client, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
                    {"MCP-Protocol-Version": version, "Mcp-Method": "notifications/cancelled"})

    if version == MODERN:
        assert response.status_code == 202 and response.content == b""
    else:
        error(response, 400, -32022)


@pytest.mark.parametrize("raw", ['{"jsonrpc": "2.0", "id": NaN, "method": "ping"}',
                                 '{"jsonrpc": "2.0", "id": 1e400, "method": "ping"}'])
def test_it_refuses_numbers_that_json_cannot_echo(client, raw):
    response = post(client, raw)

    assert response.status_code == 400 and response.json()["id"] is None


@pytest.mark.parametrize("request_id", [1.5, True, {"a": 1}])
def test_it_refuses_ids_that_are_not_strings_or_integers_without_echoing_them(client, request_id):
    answer = error(post(client, {"jsonrpc": "2.0", "id": request_id, "method": "ping"}), 400, -32600)

    assert answer["id"] is None


def test_a_listed_browser_origin_gets_a_preflight_and_cors_headers(client, settings):
    settings.MCP_ALLOWED_ORIGINS = ["https://inspector.example"]

    preflight = client.options("/mcp", headers={"Origin": "https://inspector.example",
                                                "Access-Control-Request-Method": "POST"})
    refused = client.options("/mcp", headers={"Origin": "https://evil.example",
                                              "Access-Control-Request-Method": "POST"})
    answered = rpc(client, "ping", headers={"Origin": "https://inspector.example"})

    assert preflight.status_code == 204 and preflight["Access-Control-Allow-Origin"] == "https://inspector.example"
    assert "MCP-Protocol-Version" in preflight["Access-Control-Allow-Headers"]
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused
    assert answered["Access-Control-Allow-Origin"] == "https://inspector.example"


def test_search_services_names_its_own_arguments_in_errors(client):
    missing = call(client, "search_services", {"limit": 3})
    too_long = call(client, "search_services", {"query": "x" * 10_000})

    assert missing["isError"] and missing["structuredContent"]["error"] == "query is required"
    assert too_long["isError"] and too_long["structuredContent"]["field"] == "query"
    assert too_long["structuredContent"]["error"].startswith("query must be at most")
    assert too_long["structuredContent"]["httpStatus"] == 400

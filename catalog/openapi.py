"""The OpenAPI 3.1 document served at /openapi.json: the HTTP API, one typed operation per tool.

drf-spectacular documents every DRF view under /api/ from its `extend_schema`
declaration; the schemas, headers and security requirements those declarations
share are defined here, so a later view (the jobs API) documents itself the
same way. The generic `POST /api/tools/{service_id}` is only a template: the
document lists one concrete path per published service instead, with that
service's input schema as the request body and its output schema as the 200
answer, so an OpenAPI importer gets one typed operation per tool.

The document follows the catalog: it is built again when a service or pricing
policy changes (the catalog version the search index uses) and kept in each
process until then.
"""

import copy
import json
import threading

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from catalog.documents import pricing_block
from catalog.envelope import ENVELOPE_SCHEMA
from catalog.models import SERVICE_REFERENCE_PATTERN, PricingPolicy, Service
from catalog.selectors import catalog_snapshot
from payments.instructions import PAYMENT_RECORD_SCHEMA, payment_flow

# The marker on the generic tool operation; tool_paths() replaces that operation by one per service.
TOOL_TEMPLATE = "x-server402-tool-template"


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema_ref(name: str) -> dict:
    """A reference to one of the document's named schemas (components.schemas)."""
    return _ref("schemas", name)


# --- Schemas ------------------------------------------------------------------------

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_OBJECT = {"type": "object"}

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every refusal: one sentence in `error`, then whatever helps to act on it.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in one sentence."},
        "field": {"type": ["string", "null"], "description": "The parameter the sentence is about."},
        "details": {"description": "Every validation message, by parameter."},
        "otherProblems": {**_STRINGS, "description": "Further problems with the same input."},
        "closestIds": {**_STRINGS, "description": "Published service ids that look like the one asked for."},
        "invalidReason": {"type": "string", "description": "The x402 reason code of a refused payment."},
        "charged": {"type": "boolean", "description": "Whether the caller paid for this failed call."},
        "code": {"type": "string", "description": "The upstream's error code."},
        "upstreamRequestId": _STRING,
        "retryAfterSeconds": {"type": "integer", "minimum": 0},
        "paymentId": _STRING,
        "retryToken": {"type": "string", "description": "A payment token worth the one call not delivered "
                                                        "(the payment settled before the upstream failed)."},
        "retry": {"type": "string", "description": "How to use retryToken."},
        "balanceCents": {"type": "integer", "description": "The API key's prepaid balance."},
        "httpStatus": {"type": "integer", "description": "In a failed job: what a synchronous call would have "
                                                         "answered."},
        "settlement": {"type": "string", "enum": ["unknown"],
                       "description": "The x402 settlement's outcome is unknown; the operator reconciles it."},
    },
}

_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
JOB_STATUSES = ["queued", "processing", "succeeded", "failed", "not_found"]
JOB_RECORD_SCHEMA = {
    "type": "object",
    "description": "An async job (`Prefer: respond-async`): queued, processing, then succeeded with `result` "
                   "or failed with `error` (nothing charged unless `charged`). not_found: unknown, expired, or "
                   "not the caller's.",
    "required": ["jobId", "status"],
    "properties": {
        "jobId": {"type": "string", "pattern": "^job_[0-9a-f]{32}$"},
        "status": {"type": "string", "enum": JOB_STATUSES},
        "serviceId": _STRING,
        "statusUrl": {"type": "string", "description": "Where to read it: GET with the same API key or X-Job-Secret."},
        "createdAt": _TIMESTAMP, "startedAt": _TIMESTAMP, "finishedAt": _TIMESTAMP,
        "expiresAt": {**_TIMESTAMP, "description": "When the finished job's result is deleted."},
        "attempts": {"type": "integer", "minimum": 0, "description": "Times a worker started it."},
        "charged": {"type": "boolean", "description": "Whether the caller paid for it."},
        "result": {"anyOf": [_ref("schemas", "ToolResult"), {"type": "null"}],
                   "description": "Seed 001's answer, as a synchronous call returns it."},
        "error": {"anyOf": [_ref("schemas", "Error"), {"type": "null"}],
                  "description": "Why it failed: the body a synchronous call would have answered, with httpStatus."},
        "upstream": {"type": "object", "description": "The upstream's own job (async actions).",
                     "properties": {"jobId": _STRING, "status": _STRING}},
        "paymentResponse": {"type": "string", "description": "The x402 receipt (PAYMENT-RESPONSE) once settled."},
        "retryAfterSeconds": {"type": "integer", "minimum": 0, "description": "While it is not finished."},
    },
}
JOB_ACCEPTED_SCHEMA = {
    **JOB_RECORD_SCHEMA,
    "description": "202: the call is paid for and queued. Keep jobSecret: with it (X-Job-Secret), or with the "
                   "API key it was submitted with, GET statusUrl reads the job.",
    "required": ["jobId", "status", "statusUrl", "jobSecret", "retryAfterSeconds"],
    "properties": {**JOB_RECORD_SCHEMA["properties"],
                   "jobSecret": {"type": "string", "description": "Reads this job; shown only here."}},
}
JOB_LIST_SCHEMA = {
    "type": "object",
    "required": ["jobs"],
    "properties": {"jobs": {"type": "array", "items": _ref("schemas", "JobRecord")}},
}

PAYMENT_RECORD = {
    **copy.deepcopy(PAYMENT_RECORD_SCHEMA),
    "description": "A payment (seed 001's payment record); `token` only for its client or at creation.",
    "required": ["paymentId", "serviceId", "internalServiceId", "status", "amountCents", "currency", "billingMode",
                 "maxCalls", "usedCalls", "remainingCalls", "expiresAt", "payTo", "provider", "providerId"],
}
PAYMENT_RECORD["properties"].update({
    "paymentId": {"type": "string", "pattern": "^pay_[0-9a-f]{32}$"},
    "status": {"type": "string", "enum": ["pending", "paid", "exhausted", "expired"]},
    "method": {"type": "string", "enum": ["balance", "x402"], "description": "How it was paid."},
    "receipt": {
        "type": "object",
        "description": "The settled x402 payment that paid it.",
        "properties": {"network": _STRING, "payer": _STRING, "transaction": _STRING,
                       "settledAt": {"type": "string", "format": "date-time"}},
    },
})

PAYMENT_REQUIREMENTS_SCHEMA = {
    "type": "object",
    "description": "x402 v2 PaymentRequirements: what to sign to pay this call.",
    "required": ["scheme", "network", "asset", "amount", "payTo", "maxTimeoutSeconds"],
    "properties": {
        "scheme": {"type": "string", "const": "exact"},
        "network": {"type": "string", "description": "CAIP-2 network, e.g. eip155:8453 (Base)."},
        "asset": {"type": "string", "description": "The USDC contract."},
        "amount": {"type": "string", "pattern": "^[0-9]+$", "description": "Atomic units (USDC has 6 decimals)."},
        "payTo": _STRING,
        "maxTimeoutSeconds": {"type": "integer"},
        "extra": {"type": "object", "description": "The token's EIP-712 domain: name and version."},
    },
}


def _payment_required_schema() -> dict:
    # The body schema the catalog's payment block announces, made precise where the document can be.
    schema = copy.deepcopy(payment_flow()["requiredResponse"]["bodySchema"])
    schema["description"] = ("Seed 001's payment_required body around the x402 v2 PaymentRequired (the same "
                             "requirements as the PAYMENT-REQUIRED header). Pay one accepts[] entry and retry "
                             "with PAYMENT-SIGNATURE, or use a payment token with X-Payment-Token.")
    schema["properties"].update({
        "accepts": {"type": "array", "items": schema_ref("PaymentRequirements")},
        "resource": {"type": "object", "required": ["url"],
                     "properties": {"url": _STRING, "description": _STRING, "mimeType": _STRING}},
        "invalidReason": {"type": "string", "description": "The x402 reason code when a payment was refused."},
        "paymentId": {"type": "string", "description": "The payment whose settlement failed."},
    })
    schema["properties"]["payment"] = {
        "type": "object", "description": "What one purchase costs (tool calls) or the payment being paid."}
    return schema


_PRICING_SCHEMA = {
    "type": "object",
    "properties": {
        "amountCents": {"type": "integer"}, "currency": _STRING, "policyId": _STRING,
        "settleMode": {"type": "string", "enum": PricingPolicy.SettleMode.values},
        "billingMode": {"type": "string", "enum": PricingPolicy.BillingMode.values},
        "maxCalls": {"type": "integer", "minimum": 1}, "allowReuse": {"type": "boolean"},
        "bindClient": {"type": "boolean"},
    },
}
_NULLABLE_INTEGER = {"type": ["integer", "null"]}
_QUALITY_SCHEMA = {
    "type": "object",
    "description": "Health and call statistics of the last 24 hours, and the quality score built from them.",
    "properties": {
        "qualityScore": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
        "healthStatus": {"type": "string", "enum": ["healthy", "degraded", "unhealthy", "unconfigured", "unknown"]},
        "healthCheckedAt": {"type": ["string", "null"], "format": "date-time"},
        "healthLatencyMs": _NULLABLE_INTEGER, "latencyMs": _NULLABLE_INTEGER,
        "successRate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "callCount": {"type": "integer"}, "executionCount": {"type": "integer"},
        "successCount": {"type": "integer"}, "errorCount": {"type": "integer"},
        "paymentRequireds": {"type": "integer"},
        "p50LatencyMs": _NULLABLE_INTEGER, "p95LatencyMs": _NULLABLE_INTEGER,
        "windowHours": {"type": "integer"},
        "qualityParts": {"type": "array", "items": _OBJECT}, "qualityNote": _STRING,
    },
}

CATALOG_ENTRY_SCHEMA = {
    "type": "object",
    "description": "One tool as seed 001's catalog lists it. Call it with POST {endpoint}.",
    "required": ["id", "canonicalId", "internalServiceId", "name", "description", "descriptionForModel", "category",
                 "method", "endpoint", "inputSchema", "outputSchema", "pricing", "payment", "quality", "discovery"],
    "properties": {
        "id": {"type": "string", "description": "Canonical id."},
        "canonicalId": _STRING,
        "internalServiceId": {"type": "string", "description": "Legacy internal id, still accepted."},
        "name": _STRING, "description": _STRING, "descriptionForModel": _STRING, "category": _STRING,
        "keywords": _STRINGS, "useCases": _STRINGS, "limitations": _STRINGS, "tags": _STRINGS,
        "method": {"type": "string", "const": "POST"},
        "endpoint": _STRING, "legacyEndpoint": _STRING, "endpointAliases": _STRINGS,
        "inputTypes": _STRINGS, "outputTypes": _STRINGS,
        "inputSchema": _OBJECT, "outputSchema": _OBJECT, "exampleRequest": _OBJECT, "exampleResponse": _OBJECT,
        "pricing": _PRICING_SCHEMA,
        "payment": {"type": "object", "properties": {"providerId": _STRING, "provider": _STRING}},
        "quality": _QUALITY_SCHEMA,
        "discovery": {"type": "object", "properties": {
            "toolName": {"type": "string", "description": "The MCP tool name."}, "searchText": _STRING,
            "aliases": _STRINGS, "localeHints": _STRINGS, "paymentFlow": _OBJECT, "paymentHint": _STRING,
            "retryHint": _STRING, "requiredState": _STRING}},
        "complexity": {"type": "string", "enum": Service.Complexity.values},
        "typicalResponseTime": _STRING, "cacheable": {"type": "boolean"}, "idempotent": {"type": "boolean"},
        "outputFormat": _STRING, "relatedServices": _STRINGS, "requiredContext": _STRINGS,
        "errorExamples": {"type": "array", "items": _OBJECT},
        "sla": {"type": "object", "properties": {"uptime": _STRING, "maxLatency": _STRING}},
        "matchScore": {"type": "number", "description": "Search answers only: how well it matched."},
        "matchTerms": _STRINGS,
        "why": {"type": "string", "description": "Search answers only: why it matched, and its price."},
    },
}

CATALOG_SEARCH_SCHEMA = {
    "type": "object",
    "description": "Seed 001's search answer (schemaVersion server402.catalog.search.v1).",
    "required": ["schemaVersion", "generatedAt", "query", "filters", "total", "services", "payment"],
    "properties": {
        "schemaVersion": {"type": "string", "const": "server402.catalog.search.v1"},
        "generatedAt": {"type": "string", "format": "date-time"},
        "generatedAtBeijing": _STRING, "timezone": _STRING, "query": _STRING,
        "filters": _OBJECT,
        "total": {"type": "integer", "minimum": 0},
        "services": {"type": "array", "items": schema_ref("CatalogEntry")},
        "payment": {"type": "object", "description": "How to pay, for every tool listed."},
    },
}

SERVICE_LIST_SCHEMA = {
    "type": "object",
    "required": ["filters", "total", "services"],
    "properties": {
        "filters": _OBJECT,
        "total": {"type": "integer", "minimum": 0},
        "services": {"type": "array", "items": schema_ref("CatalogEntry")},
    },
}



def _payment_create_request() -> dict:
    # Unknown fields are refused (PaymentCreateSerializer), and so is a providerId not the service's own.
    provider_ids = Service.objects.filter(state=Service.State.PUBLISHED).values_list("payment_provider_id", flat=True)
    return {
        "type": "object",
        "required": ["serviceId"],
        "additionalProperties": False,
        "properties": {
            "serviceId": {"type": "string", "pattern": SERVICE_REFERENCE_PATTERN, "maxLength": 150,
                          "description": "The canonical service id (the legacy id and the tool name work too)."},
            "providerId": {"type": "string", "enum": sorted(set(provider_ids)),
                           "description": "The service's payment provider (catalog entry payment.providerId)."},
        },
    }


PAYMENT_PAY_REQUEST = {
    "type": "object",
    "properties": {
        "method": {"type": "string", "enum": ["balance", "x402"],
                   "description": "balance: from the API key's prepaid balance (the default without "
                                  "PAYMENT-SIGNATURE); x402: with PAYMENT-SIGNATURE (the default with it)."},
    },
}


def _schemas() -> dict:
    return {
        "Error": ERROR_SCHEMA,
        "PaymentRecord": PAYMENT_RECORD,
        "PaymentRequirements": PAYMENT_REQUIREMENTS_SCHEMA,
        "PaymentRequired": _payment_required_schema(),
        "CatalogEntry": CATALOG_ENTRY_SCHEMA,
        "CatalogSearch": CATALOG_SEARCH_SCHEMA,
        "ServiceList": SERVICE_LIST_SCHEMA,
        "PaymentCreateRequest": _payment_create_request(),
        "PaymentPayRequest": PAYMENT_PAY_REQUEST,
        "ToolResult": {**ENVELOPE_SCHEMA, "description": "Seed 001's answer: the upstream's result under data."},
        "JobRecord": JOB_RECORD_SCHEMA,
        "JobAccepted": JOB_ACCEPTED_SCHEMA,
        "JobList": JOB_LIST_SCHEMA,
    }


# --- Headers and security -----------------------------------------------------------

_BASE64_JSON = {"type": "string", "contentEncoding": "base64", "contentMediaType": "application/json"}


def _header(description: str, schema: dict) -> dict:
    return {"description": description, "schema": schema}


_HEADERS = {
    "PAYMENT-REQUIRED": _header("base64 of the x402 v2 PaymentRequired (x402Version, error, resource, accepts).",
                                _BASE64_JSON),
    "X-Payment-Required": _header("Always `true` on a 402.", {"type": "string", "enum": ["true"]}),
    "PAYMENT-RESPONSE": _header("base64 of the x402 SettleResponse (success, transaction, network, payer): "
                                "the receipt of an x402 payment.", _BASE64_JSON),
    "X-Payment-Remaining-Calls": _header("Calls left on the payment that paid this one.",
                                         {"type": "integer", "minimum": 0}),
    "Retry-After": _header("Seconds to wait before trying again.", {"type": "integer", "minimum": 0}),
    "Location": _header("The job's status URL.", {"type": "string"}),
    "Preference-Applied": _header("`respond-async`: the call was queued as a job.",
                                  {"type": "string", "enum": ["respond-async"]}),
    "X-Server402-Mode": _header("sandbox or live: a sandbox answer never passes for a live one.",
                                {"type": "string", "enum": ["sandbox", "live"]}),
}

SECURITY_SCHEMES = {
    "apiKeyBearer": {"type": "http", "scheme": "bearer",
                     "description": "A Server402 API key as `Authorization: Bearer <key>`."},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                     "description": "A Server402 API key as `X-API-Key: <key>`."},
    "operatorSession": {"type": "apiKey", "in": "cookie", "name": "sessionid",
                        "description": "An operator's dashboard session (draft services only)."},
}

# Security requirements are alternatives: `{}` first means a caller may come without any key.
API_KEY_OPTIONAL = [{}, {"apiKeyBearer": []}, {"apiKeyHeader": []}]
API_KEY_REQUIRED = [{"apiKeyBearer": []}, {"apiKeyHeader": []}]
OPERATOR_SESSION_OPTIONAL = [{}, {"operatorSession": []}]


def response_header(name: str, *, codes: list[int], required: bool = False) -> OpenApiParameter:
    """One of the documented response headers on the answers with status `codes` (for extend_schema)."""
    header = _HEADERS[name]
    return OpenApiParameter(name, type=header["schema"], location=OpenApiParameter.HEADER,
                            description=header["description"], response=codes, required=required)


PAYMENT_SIGNATURE = OpenApiParameter(
    "PAYMENT-SIGNATURE", type=_BASE64_JSON, location=OpenApiParameter.HEADER, required=False,
    description="x402 v2: base64 of a PaymentPayload that signs one accepts[] requirement of the 402 "
                "(EIP-3009 USDC transfer authorization). Used before X-Payment-Token.")
PAYMENT_TOKEN = OpenApiParameter(
    "X-Payment-Token", type=str, location=OpenApiParameter.HEADER, required=False,
    description="A paid payment's token (POST /api/payments, then pay it): one call of it pays this call.")


PREFER = OpenApiParameter(
    "Prefer", type=str, location=OpenApiParameter.HEADER, required=False,
    description="`respond-async` (RFC 7240): after the same checks and payment, answer 202 with a job to read "
                "later instead of waiting for the result. Other preferences are ignored.")


def error(description: str) -> OpenApiResponse:
    """An answer with the common error body, for extend_schema(responses=...)."""
    return OpenApiResponse(response=schema_ref("Error"), description=description)


def payment_required(description: str) -> OpenApiResponse:
    """A 402 with seed 001's payment_required body."""
    return OpenApiResponse(response=schema_ref("PaymentRequired"), description=description)


# --- The catalog's part -------------------------------------------------------------


class CatalogChoiceFieldExtension(OpenApiSerializerFieldExtension):
    """A catalog value (a category) is documented as an enum of the values the catalog has now."""

    target_class = "catalog.api.serializers.CatalogChoiceField"

    def map_serializer_field(self, auto_schema, direction):
        # Blank (the default) means any.
        return {"type": "string", "enum": ["", *sorted(self.target.documented_choices())]}


def _tool_description(service: Service) -> str:
    policy = service.pricing_policy
    lines = [
        service.description_for_model,
        "",
        f"Price: {policy.price_label} for {policy.max_calls} call(s) (pricing policy {policy.id}). Without "
        "payment the answer is 402 with accepts[]: pay one and retry the same request with PAYMENT-SIGNATURE, "
        "or send X-Payment-Token. A POST with neither payment nor body is a price enquiry (402). Nothing is "
        "charged for a refused or failed call.",
        f"Also answers at /api/tools/{service.internal_id} (legacy id) and /api/tools/{service.tool_name}.",
    ]
    if policy.require_api_key:
        lines.append("An API key is required.")
    if not service.enabled:
        lines.append("Disabled by the operator for now: calls answer 503.")
    return "\n".join(lines)


def _tool_operation(template: dict, service: Service) -> dict:
    operation = copy.deepcopy(template)
    operation.pop(TOOL_TEMPLATE, None)
    # The template's {service_id} path parameter is now part of the path itself.
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "path"]
    operation.update(
        operationId=service.tool_name,
        summary=service.name,
        description=_tool_description(service),
        tags=[service.category],
        security=API_KEY_REQUIRED if service.pricing_policy.require_api_key else API_KEY_OPTIONAL,
    )
    operation["x-server402-pricing"] = pricing_block(service)
    # Unknown parameters are refused (catalog.input_validation closes every input schema), so the
    # document says so too.
    body_schema = {"additionalProperties": False, **service.input_schema}
    body = {"schema": body_schema}
    if service.example_request:
        body["example"] = service.example_request
    operation["requestBody"] = {"required": bool(service.input_schema.get("required")),
                                "content": {"application/json": body}}
    success = operation["responses"]["200"]
    result = {"schema": service.output_schema or schema_ref("ToolResult")}
    if service.example_response:
        result["example"] = service.example_response
    success["content"] = {"application/json": result}
    return operation


def tool_paths(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: one path per published tool, the shared parts, the servers."""
    components = result.setdefault("components", {})
    published = Service.objects.filter(state=Service.State.PUBLISHED).select_related("pricing_policy").order_by("id")
    for path, operations in list(result["paths"].items()):
        for method, operation in list(operations.items()):
            if isinstance(operation, dict) and operation.get(TOOL_TEMPLATE):
                del operations[method]
                template = _shared_by_every_tool(operation, components)
                for service in published:
                    concrete = path.replace("{service_id}", service.id)
                    result["paths"].setdefault(concrete, {})[method] = _tool_operation(template, service)
        if not operations:
            del result["paths"][path]
    _add_mode_header(result, components)
    components.setdefault("schemas", {}).update(_schemas())
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    result["servers"] = [{"url": settings.PUBLIC_BASE_URL, "description": f"Server402 ({settings.SERVER402_MODE})"}]
    result["info"]["description"] = _DESCRIPTION.format(network=settings.X402_NETWORK, mode=settings.SERVER402_MODE)
    result["tags"] = _tags(result)
    return result


def _shared_by_every_tool(template: dict, components: dict) -> dict:
    """The template with what every tool shares (refusals, headers) moved to components, once for all tools."""
    template = copy.deepcopy(template)
    template["parameters"] = [_hoist(components, "parameters", parameter["name"], parameter)
                              if parameter.get("in") == "header" else parameter
                              for parameter in template.get("parameters", [])]
    for code, response in template["responses"].items():
        if code == "200":
            response["headers"] = {name: _hoist(components, "headers", name, header)
                                   for name, header in response.get("headers", {}).items()}
        else:
            template["responses"][code] = _hoist(components, "responses", f"ToolCall{code}", response)
    return template


def _hoist(components: dict, kind: str, name: str, item: dict) -> dict:
    components.setdefault(kind, {})[name] = item
    return _ref(kind, name)


def _add_mode_header(result: dict, components: dict) -> None:
    mode = _hoist(components, "headers", "X-Server402-Mode", _HEADERS["X-Server402-Mode"])
    responses = [response for operations in result["paths"].values() for operation in operations.values()
                 for response in operation.get("responses", {}).values()]
    for response in [*responses, *components.get("responses", {}).values()]:
        if "$ref" not in response:
            response.setdefault("headers", {})["X-Server402-Mode"] = mode


def _tags(result: dict) -> list[dict]:
    names = sorted({tag for operations in result["paths"].values() for operation in operations.values()
                    for tag in operation.get("tags", [])})
    described = {"catalog": "Find tools.", "payments": "The legacy payment-token flow.",
                 "jobs": "Results of calls made with `Prefer: respond-async`."}
    return [{"name": name, **({"description": described[name]} if name in described else {})} for name in names]


_DESCRIPTION = """\
Paid visual-AI tools (Alibaba Cloud Visual Intelligence) for agents, one call at a time, over HTTP 402.

Find a tool with GET /api/catalog/search, then POST its arguments to its path below. Without payment the \
answer is 402: its body and the PAYMENT-REQUIRED header carry x402 v2 requirements (USDC on {network}). \
Sign one with any x402 client and send the same request again with PAYMENT-SIGNATURE; or buy a payment token \
(POST /api/payments, then pay it) and send X-Payment-Token. An API key (Authorization: Bearer or X-API-Key) \
is optional unless a tool says otherwise. Nothing is charged for a refused or failed call.

Send `Prefer: respond-async` to get a job instead of waiting: 202 with statusUrl and jobSecret, then GET \
/api/jobs/{{job_id}} until it succeeded or failed. Its x402 payment is settled by the worker, as the tool's \
pricing policy says (before or after the call); a job that fails is not charged, or carries a retryToken.

This server runs in {mode} mode; every answer says so in X-Server402-Mode."""


def api_endpoints_only(endpoints: list) -> list:
    """drf-spectacular preprocessing hook: the document is about /api/ (not /mcp, the dashboard or the sandbox)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/")]


# --- Building and caching -----------------------------------------------------------


def openapi_document() -> dict:
    """The document as it is now, built afresh (openapi_document_json() is the cached one)."""
    return SchemaGenerator().get_schema(request=None, public=True)


_lock = threading.Lock()
_cached: tuple[tuple, bytes] | None = None


def openapi_document_json() -> bytes:
    """The document as JSON, built again only when the catalog or the settings it prints have changed."""
    global _cached
    # The search index's catalog version: any edit to a service or pricing policy changes it.
    key = (catalog_snapshot()[0], settings.PUBLIC_BASE_URL, settings.SERVER402_MODE)
    with _lock:
        if _cached is None or _cached[0] != key:
            _cached = (key, json.dumps(openapi_document(), ensure_ascii=False).encode())
        return _cached[1]

"""The catalog as MCP tools: what `tools/list` shows and what `tools/call` does.

Each published service is a tool named like its id with underscores
(celebrity_recognition). A call runs the one paid-call pipeline
(payments.pipeline), so MCP refuses, charges and answers exactly as
`POST /api/tools/<id>` does; only the wrapping differs: an HTTP status becomes
an `isError` result, a PAYMENT-RESPONSE header becomes
`_meta["x402/payment-response"]`. `search_services` is free.

A paid call may ask for a job instead of waiting (`_meta["server402/respond-async"]`,
HTTP's `Prefer: respond-async`): it is checked and paid for the same way and
answers with the job's record; the free `get_job_result` reads the job as
`GET /api/jobs/<id>` does, for its owner only.
"""

import base64
import binascii
import copy
import json
import re
import threading

from django.conf import settings
from rest_framework import status
from x402.http.utils import decode_payment_response_header

from catalog.aliyun_metadata import action_destroys, action_writes
from catalog.api.serializers import SearchQuerySerializer
from catalog.envelope import ENVELOPE_SCHEMA
from catalog.models import Service
from catalog.openapi import ERROR_SCHEMA, JOB_ACCEPTED_SCHEMA, JOB_RECORD_SCHEMA
from catalog.selectors import catalog_search, catalog_snapshot, service_lookup
from jobs.selectors import JOB_ID, job_not_found, job_record, jobs_visible, malformed_job_id
from payments.challenge import mcp_bazaar_extension
from payments.instructions import payment_flow
from payments.pipeline import ToolAnswer, paid_call_run
from payments.selectors import ApiKeyRejected, api_key_authenticate
from server402.api_errors import validation_error_body

SEARCH_TOOL = "search_services"
JOB_TOOL = "get_job_result"
PAYMENT_TOKEN_ARGUMENT = "paymentToken"
# The x402 MCP transport's keys (x402 specs/transports-v2/mcp.md).
PAYMENT_META_KEY = "x402/payment"
PAYMENT_RESPONSE_META_KEY = "x402/payment-response"
REMAINING_CALLS_META_KEY = "server402/remaining-calls"
# true asks a paid tool for a job (HTTP's Prefer: respond-async); the answer names the job under JOB_META_KEY.
RESPOND_ASYNC_META_KEY = "server402/respond-async"
JOB_META_KEY = "server402/job"

# How an MCP client asks for a job, in one sentence for the server's instructions.
RESPOND_ASYNC_HELP = (
    f'To get a job instead of waiting, call a paid tool with params._meta["{RESPOND_ASYNC_META_KEY}"] set to '
    f"true: it is paid as usual and answers with the job's jobId, statusUrl and jobSecret (its id also in "
    f'result._meta["{JOB_META_KEY}"]); the free {JOB_TOOL} tool reads the job and, once it succeeded, its result.'
)

_TOOL_NAME = re.compile(r"[a-z0-9_]{1,128}")


class InvalidParams(Exception):
    """The request cannot name a tool call: JSON-RPC -32602, not a tool result."""


def _payment_required_schema() -> dict:
    schema = copy.deepcopy(payment_flow()["requiredResponse"]["bodySchema"])
    schema["properties"]["status"] = {"const": "payment_required", "type": "string"}
    schema["required"] = ["status", *schema["required"]]
    return schema


# The OpenAPI components the job schemas refer to. An MCP client resolves a $ref only inside the tool's own
# schema, so the tools carry these inline.
_COMPONENTS = {"ToolResult": ENVELOPE_SCHEMA, "Error": ERROR_SCHEMA}


def _self_contained(schema):
    """`schema` with every `#/components/schemas/...` reference replaced by the schema it names."""
    if isinstance(schema, list):
        return [_self_contained(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _self_contained(_COMPONENTS[schema["$ref"].removeprefix("#/components/schemas/")])
    return {key: _self_contained(value) for key, value in schema.items()}


def _job_accepted_schema() -> dict:
    """What a paid tool answers when asked for a job: JOB_ACCEPTED_SCHEMA's required fields, nothing else.

    Every paid tool carries it, so it is kept small: the whole record, inlined
    in each of them, would double tools/list. The answer is the whole record
    all the same; the schema leaves the object open, so it validates.
    get_job_result's outputSchema describes the whole record.
    """
    required = JOB_ACCEPTED_SCHEMA["required"]
    # The descriptions are HTTP's (X-Job-Secret, GET statusUrl); over MCP, get_job_result reads the job.
    properties = {name: {key: value for key, value in JOB_ACCEPTED_SCHEMA["properties"][name].items()
                         if key != "description"} for name in required}
    return _self_contained({"type": "object", "required": required, "properties": properties})


def _service_tool(service: Service, payment_required: dict, job_accepted: dict) -> dict:
    input_schema = copy.deepcopy(service.input_schema) or {"type": "object"}
    input_schema["type"] = "object"
    input_schema.setdefault("properties", {})[PAYMENT_TOKEN_ARGUMENT] = {
        "type": "string",
        "description": "A paid payment token (POST /api/payments, then pay it). Leave it out to get "
                       "payment_required with x402 accepts[]; or pay with _meta[\"x402/payment\"] instead.",
    }
    price = service.pricing_policy.price_label
    return {
        "name": service.tool_name,
        "title": service.name,
        "description": (f"{service.description_for_model} Price: {price} per call. A call without payment "
                        "returns isError with payment_required (x402 accepts[]); pay and call again."),
        "inputSchema": input_schema,
        # A paid answer is the envelope, or the accepted job when one was asked for; an unpaid one (isError) is
        # payment_required: the schema admits all three.
        "outputSchema": {"type": "object", "anyOf": [service.output_schema or ENVELOPE_SCHEMA, payment_required,
                                                     job_accepted]},
        "annotations": {
            "title": service.name,
            # Hosts ask before calling a tool that is not read-only, and warn harder before a destructive one.
            "readOnlyHint": not action_writes(service.upstream_action),
            "destructiveHint": action_destroys(service.upstream_action),
            "idempotentHint": service.idempotent,
            "openWorldHint": True,
        },
    }


def _search_tool() -> dict:
    return {
        "name": SEARCH_TOOL,
        "title": "Search the Server402 catalog",
        "description": "Free. Finds the paid visual-AI tools for a task described in plain English or Chinese, "
                       "or by id, tool name or Alibaba Cloud action; answers the catalog search "
                       "(GET /api/catalog/search) with each service's toolName, inputSchema and price.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": settings.CATALOG_SEARCH_MAX_QUERY_LENGTH,
                          "description": "What the tool should do, e.g. 'recognise celebrities in a photo'."},
                "limit": {"type": "integer", "minimum": 1, "maximum": settings.CATALOG_SEARCH_MAX_LIMIT,
                          "default": 10},
                "category": {"type": "string", "description": "Only this category, e.g. face-body."},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
        "outputSchema": {
            "type": "object",
            "properties": {"schemaVersion": {"type": "string"}, "total": {"type": "integer"},
                           "services": {"type": "array", "items": {"type": "object"}}},
            "required": ["schemaVersion", "total", "services"],
        },
        "annotations": {"title": "Search the Server402 catalog", "readOnlyHint": True, "destructiveHint": False,
                        "idempotentHint": True, "openWorldHint": False},
    }


def _job_tool() -> dict:
    return {
        "name": JOB_TOOL,
        "title": "Read an async job",
        "description": f'Free. Reads the job a paid tool called with _meta["{RESPOND_ASYNC_META_KEY}"]: true '
                       "answered with, as GET /api/jobs/<jobId> does: queued or processing (call again after "
                       "retryAfterSeconds), succeeded with the tool's result, or failed saying why (nothing charged "
                       "unless charged is true). Only its owner reads it: the API key it was called with, or its "
                       "jobSecret.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "jobId": {"type": "string", "pattern": f"^{JOB_ID.pattern}$",
                          "description": "The jobId the paid tool answered with."},
                "jobSecret": {"type": "string", "description": "The jobSecret the paid tool answered with; not "
                                                               "needed with the API key the job was called with."},
            },
            "required": ["jobId"],
            "additionalProperties": False,
        },
        "outputSchema": _self_contained(JOB_RECORD_SCHEMA),
        "annotations": {"title": "Read an async job", "readOnlyHint": True, "destructiveHint": False,
                        "idempotentHint": True, "openWorldHint": False},
    }


class _ToolCache:
    """Every tool's definition, sorted by name, rebuilt when the catalog version changes (any edit, any process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._version = None
        self._tools: list[dict] = []

    def get(self) -> list[dict]:
        version, services = catalog_snapshot()
        with self._lock:
            if version != self._version:
                payment_required, job_accepted = _payment_required_schema(), _job_accepted_schema()
                tools = [_search_tool(), _job_tool(),
                         *(_service_tool(s, payment_required, job_accepted) for s in services.values())]
                self._tools = sorted(tools, key=lambda tool: tool["name"])
                self._version = version
            return self._tools


_tool_cache = _ToolCache()


def _cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _after(cursor) -> str:
    if not isinstance(cursor, str):
        raise InvalidParams("cursor must be a string from an earlier nextCursor")
    try:
        name = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
    except (binascii.Error, ValueError):
        name = ""
    if not _TOOL_NAME.fullmatch(name):
        raise InvalidParams("cursor is not one this server gave out; list again without a cursor")
    return name


def tools_page(cursor=None) -> tuple[list[dict], str | None]:
    """One page of tools (MCP_TOOLS_PAGE_SIZE of them, by name) after `cursor`, and the next page's cursor."""
    tools = _tool_cache.get()
    if cursor is not None:
        after = _after(cursor)
        tools = [tool for tool in tools if tool["name"] > after]
    page = tools[:settings.MCP_TOOLS_PAGE_SIZE]
    more = len(tools) > len(page)
    return page, (_cursor(page[-1]["name"]) if more else None)


def _result(structured: dict, *, is_error: bool, meta: dict | None = None) -> dict:
    # Clients without structuredContent support read the same JSON as text.
    result = {
        "content": [{"type": "text", "text": json.dumps(structured, ensure_ascii=False)}],
        "structuredContent": structured,
        "isError": is_error,
    }
    if meta:
        result["_meta"] = meta
    return result


def _input_error(message: str, field: str | None, **details) -> dict:
    return _result({"status": "error", "httpStatus": status.HTTP_400_BAD_REQUEST, "error": message, "field": field,
                    **details}, is_error=True)


def _search(arguments: dict) -> dict:
    unknown = sorted(set(arguments) - {"query", "limit", "category"})
    if unknown:
        return _input_error(f"unknown argument {unknown[0]!r}; search_services takes query, limit, category",
                            unknown[0])
    if "query" not in arguments:
        return _input_error("query is required", "query")
    serializer = SearchQuerySerializer(data={"q": arguments["query"], **{
        key: arguments[key] for key in ("limit", "category") if key in arguments}})
    if not serializer.is_valid():
        problem = validation_error_body(serializer.errors)
        if problem["field"] == "q":
            # The HTTP API's parameter is q and its messages name it; this tool's argument is query.
            problem.update(field="query", error=f"query{problem['error'].removeprefix('q')}",
                           details={"query": problem["details"]["q"]})
        return _input_error(**{"message": problem["error"], "field": problem["field"],
                               "details": problem["details"]})
    params = serializer.validated_data
    return _result(catalog_search(query=params["q"], limit=params["limit"], category=params["category"] or None),
                   is_error=False)


def _job_result(arguments: dict, api_key: str | None) -> dict:
    """get_job_result: the job's record for its owner, as GET /api/jobs/<id> answers it, refusals included."""
    unknown = sorted(set(arguments) - {"jobId", "jobSecret"})
    if unknown:
        return _input_error(f"unknown argument {unknown[0]!r}; {JOB_TOOL} takes jobId, jobSecret", unknown[0])
    job_id, secret = arguments.get("jobId"), arguments.get("jobSecret")
    if job_id is None:
        return _input_error("jobId is required", "jobId")
    for name, value in (("jobId", job_id), ("jobSecret", secret)):
        if value is not None and not isinstance(value, str):
            return _input_error(f"{name} must be a string", name)
    if not JOB_ID.fullmatch(job_id):
        return _input_error(malformed_job_id(job_id), "jobId")
    try:
        key = api_key_authenticate(api_key) if api_key is not None else None
    except ApiKeyRejected as rejected:
        return _result({"status": "error", "httpStatus": status.HTTP_401_UNAUTHORIZED, "error": rejected.reason},
                       is_error=True)
    secrets = [secret.strip()] if secret and secret.strip() else []
    job = jobs_visible(job_ids=[job_id], api_key=key, secrets=secrets).get(job_id)
    if job is None:
        return _result(job_not_found(job_id), is_error=True)
    meta = {}
    if job.receipt:
        # The receipt where the x402 MCP transport puts it, as a synchronous call's answer carries it.
        meta[PAYMENT_RESPONSE_META_KEY] = decode_payment_response_header(job.receipt).model_dump(
            mode="json", by_alias=True, exclude_none=True)
    return _result(job_record(job), is_error=False, meta=meta)


def _answer_result(service: Service, answer: ToolAnswer) -> dict:
    meta = {}
    if answer.settlement is not None:
        meta[PAYMENT_RESPONSE_META_KEY] = answer.settlement.model_dump(mode="json", by_alias=True, exclude_none=True)
    if answer.status in (status.HTTP_200_OK, status.HTTP_202_ACCEPTED):
        if "X-Payment-Remaining-Calls" in answer.headers:
            meta[REMAINING_CALLS_META_KEY] = int(answer.headers["X-Payment-Remaining-Calls"])
        if answer.status == status.HTTP_202_ACCEPTED:
            meta[JOB_META_KEY] = {"jobId": answer.body["jobId"], "statusUrl": answer.body["statusUrl"]}
        return _result(answer.body, is_error=False, meta=meta)
    if answer.status == status.HTTP_402_PAYMENT_REQUIRED:
        # The bazaar's MCP shape: discovery services list the tool under /mcp, not the HTTP route.
        structured = {"status": "payment_required", **answer.body, "extensions": mcp_bazaar_extension(service)}
        if PAYMENT_RESPONSE_META_KEY in meta:
            # A failed settlement: the x402 MCP transport reports it inside the PaymentRequired too.
            structured[PAYMENT_RESPONSE_META_KEY] = meta[PAYMENT_RESPONSE_META_KEY]
        return _result(structured, is_error=True, meta=meta)
    structured = {"status": "error", "httpStatus": answer.status, **answer.body}
    if "Retry-After" in answer.headers:
        structured.setdefault("retryAfterSeconds", int(answer.headers["Retry-After"]))
    return _result(structured, is_error=True, meta=meta)


def _service(name: str) -> Service:
    service = service_lookup(name) if _TOOL_NAME.fullmatch(name) else None
    # A draft is not a tool; a published service switched off is, and says so when called.
    if service is None or service.state != Service.State.PUBLISHED or service.tool_name != name:
        raise InvalidParams(f"unknown tool {name!r}; tools/list names every tool, search_services finds one")
    return service


def tool_call(*, name, arguments, meta, api_key: str | None, client_address: str | None = None) -> dict:
    """Run `tools/call` and return its CallToolResult; InvalidParams when there is no such call to make.

    Tool-level failures (bad input, payment required or refused, upstream
    errors) are results with isError true, carrying the HTTP answer's body.
    A paid call with `_meta[RESPOND_ASYNC_META_KEY]` true answers, once paid,
    with the accepted job's record (not an error), its id in `_meta[JOB_META_KEY]`. `client_address`
    counts an unpaid call without an API key against its address's limit (see paid_call_run).
    """
    if not isinstance(name, str):
        raise InvalidParams("params.name must be a string naming a tool")
    if arguments is not None and not isinstance(arguments, dict):
        raise InvalidParams("params.arguments must be an object")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidParams("params._meta must be an object")
    respond_async = (meta or {}).get(RESPOND_ASYNC_META_KEY, False)
    if not isinstance(respond_async, bool):
        raise InvalidParams(f'params._meta["{RESPOND_ASYNC_META_KEY}"] must be true (answer with a job) or false')
    # Free tools answer at once: there is nothing to wait for, so a job is not made for them.
    if name == SEARCH_TOOL:
        return _search(arguments or {})
    if name == JOB_TOOL:
        return _job_result(arguments or {}, api_key)
    service = _service(name)
    # No arguments at all, unpaid, asks for the price, as a POST without a body does.
    arguments = None if arguments is None else dict(arguments)
    token = arguments.pop(PAYMENT_TOKEN_ARGUMENT, None) if arguments is not None else None
    if token is not None and not isinstance(token, str):
        return _input_error(f"{PAYMENT_TOKEN_ARGUMENT} must be a string", PAYMENT_TOKEN_ARGUMENT)
    answer = paid_call_run(reference=service.id, service=service, arguments=arguments, api_key=api_key,
                           payment_token=token or None, payment_payload=(meta or {}).get(PAYMENT_META_KEY),
                           respond_async=respond_async, client_address=client_address)
    return _answer_result(service, answer)

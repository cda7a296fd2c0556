"""`/mcp`: the Model Context Protocol over Streamable HTTP, answered with plain JSON.

Two eras share the endpoint, told apart by the `MCP-Protocol-Version` header:
- the handshake era (2025-03-26, 2025-06-18, 2025-11-25): `initialize`, then
  requests carrying the negotiated version in the header (none means 2025-03-26,
  the only version that also allows JSON-RPC batches);
- the stateless era (2026-07-28): no `initialize`; every request carries its
  version in `params._meta` and repeats version, method and tool name in the
  `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, which must agree;
  results carry `resultType`, and lists say how long they may be cached.
No session is kept (no `Mcp-Session-Id`), so any process can answer any request.
Nothing here calls a tool: server402.mcp_tools does, through the paid-call pipeline.
"""

import json
import tomllib
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from payments.instructions import MCP_PAYMENT
from payments.selectors import api_key_presented
from server402 import mcp_tools
from server402.client_addresses import client_address
from server402.request_bodies import BodyRefused, bounded_body

HANDSHAKE_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS = ("2026-07-28",)
# A request without MCP-Protocol-Version is taken as 2025-03-26 (the header came in 2025-06-18).
UNSTATED_VERSION = "2025-03-26"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HEADER_MISMATCH = -32020
UNSUPPORTED_PROTOCOL_VERSION = -32022

# The stateless era maps these errors onto HTTP statuses; the handshake era answers a
# well-formed request's error with 200, as its transport always has.
_MODERN_ERROR_STATUS = {PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
                        UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404}

PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
SERVER_INFO_META_KEY = "io.modelcontextprotocol/serverInfo"

# A batch is a 2025-03-26 feature; bound it so one POST cannot carry unbounded work.
BATCH_LIMIT = 20

with open(settings.BASE_DIR / "pyproject.toml", "rb") as project:
    SERVER_INFO = {"name": "server402", "title": "Server402", "version": tomllib.load(project)["project"]["version"]}


def _instructions() -> str:
    mode = ("sandbox mode: results come from a local emulator of Alibaba Cloud and x402 payments are Base "
            "Sepolia test USDC" if settings.SANDBOX else "live mode: Alibaba Cloud results, paid in USDC on Base")
    return (f"Server402 sells single calls of Alibaba Cloud visual-AI actions ({mode}). Find a tool with the free "
            f"search_services tool or tools/list. {MCP_PAYMENT} {mcp_tools.RESPOND_ASYNC_HELP}")


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data=None, http_status: int | None = None):
        super().__init__(message)
        self.code, self.message, self.data, self.http_status = code, message, data, http_status


def _unsupported(requested) -> _RpcError:
    return _RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                     {"supported": [*HANDSHAKE_VERSIONS, *MODERN_VERSIONS], "requested": requested}, 400)


def _error_body(error: _RpcError, request_id=None) -> dict:
    body = {"code": error.code, "message": error.message}
    if error.data is not None:
        body["data"] = error.data
    return {"jsonrpc": "2.0", "id": request_id, "error": body}


def _json(body, *, status: int = 200) -> HttpResponse:
    # Descriptions carry Chinese; as UTF-8 rather than \u escapes the tool list is a sixth smaller.
    return HttpResponse(json.dumps(body, ensure_ascii=False), status=status, content_type="application/json")


def _error_response(error: _RpcError, request_id=None, *, modern: bool = False) -> HttpResponse:
    http_status = error.http_status or (_MODERN_ERROR_STATUS.get(error.code, 200) if modern else 200)
    return _json(_error_body(error, request_id), status=http_status)


def _own_origin() -> str:
    return "{0.scheme}://{0.netloc}".format(urlsplit(settings.PUBLIC_BASE_URL))


def _origin_allowed(origin: str | None) -> bool:
    # Browsers send Origin; a page on another site must not drive tools with a visitor's network (DNS rebinding).
    if origin is None or origin == _own_origin():
        return True
    allowed = settings.MCP_ALLOWED_ORIGINS
    return "*" in allowed or origin in allowed


_CORS_REQUEST_HEADERS = ("Content-Type, Accept, Authorization, X-API-Key, MCP-Protocol-Version, Mcp-Method, "
                         "Mcp-Name, Mcp-Session-Id, Last-Event-ID")


def _cross_origin(response: HttpResponse, origin: str | None) -> HttpResponse:
    """Let a browser page on a listed origin (an MCP inspector, a web agent) read the answer."""
    if origin is not None and origin != _own_origin() and _origin_allowed(origin):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "X-Server402-Mode"
    response["Vary"] = "Origin"
    return response


def _preflight(origin: str | None) -> HttpResponse:
    if not _origin_allowed(origin):
        return HttpResponse(status=403)
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = _CORS_REQUEST_HEADERS
    response["Access-Control-Max-Age"] = "600"
    return _cross_origin(response, origin)


def _accepts_json(accept: str) -> bool:
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {"application/json", "application/*", "*/*"})


def _read_body(request) -> bytes:
    try:
        return bounded_body(request, settings.MCP_MAX_BODY_BYTES)
    except BodyRefused as refused:
        raise _RpcError(INVALID_REQUEST, refused.message, http_status=413 if refused.too_large else 400) from None


def _valid_id(request_id) -> bool:
    # MCP allows strings and integers: no null, no booleans, no fractions.
    return isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool))


def _request_id(message: dict):
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise _RpcError(INVALID_REQUEST, "id must be a string or an integer", http_status=400)
    return request_id


def _no_constants(name: str):
    # Python's json reads NaN and Infinity, which are not JSON and could not be echoed back as JSON.
    raise ValueError(f"{name} is not JSON")


def _envelope_check(message) -> None:
    if not isinstance(message, dict):
        raise _RpcError(INVALID_REQUEST, "the body must be one JSON-RPC request or notification object")
    if message.get("jsonrpc") != "2.0":
        raise _RpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"')
    if not isinstance(message.get("method"), str):
        raise _RpcError(INVALID_REQUEST, "method must be a string")
    if "params" in message and not isinstance(message["params"], dict):
        raise _RpcError(INVALID_REQUEST, "params must be an object")


class _Exchange:
    """One JSON-RPC message in the context of its HTTP request."""

    def __init__(self, request, message: dict, version: str, *, modern: bool):
        self.request = request
        self.message = message
        self.params = message.get("params") or {}
        self.version = version
        self.modern = modern

    def answer(self) -> dict:
        method = self.message["method"]
        handler = (_MODERN_METHODS if self.modern else _HANDSHAKE_METHODS).get(method)
        if handler is None:
            raise _RpcError(METHOD_NOT_FOUND, f"method {method!r} is not served at protocol version {self.version}")
        result = handler(self)
        if self.modern:
            result["resultType"] = "complete"
        return result


def _initialize(exchange: _Exchange) -> dict:
    requested = exchange.params.get("protocolVersion")
    if not isinstance(requested, str):
        raise _RpcError(INVALID_PARAMS, "params.protocolVersion must be a string")
    # The spec's negotiation: the client's version if served, else the newest this server speaks.
    version = requested if requested in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]
    return {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO, "instructions": _instructions()}


def _discover(exchange: _Exchange) -> dict:
    return {"supportedVersions": [*HANDSHAKE_VERSIONS, *MODERN_VERSIONS], "capabilities": {"tools": {}},
            "instructions": _instructions(), "_meta": {SERVER_INFO_META_KEY: SERVER_INFO},
            "ttlMs": settings.MCP_TOOLS_TTL_SECONDS * 1000, "cacheScope": "public"}


def _ping(exchange: _Exchange) -> dict:
    return {}


def _tools_list(exchange: _Exchange) -> dict:
    try:
        tools, next_cursor = mcp_tools.tools_page(exchange.params.get("cursor"))
    except mcp_tools.InvalidParams as invalid:
        raise _RpcError(INVALID_PARAMS, str(invalid)) from None
    result = {"tools": tools}
    if next_cursor:
        result["nextCursor"] = next_cursor
    if exchange.modern:
        # Tool lists are the same for every caller: shared caches may keep them.
        result.update(ttlMs=settings.MCP_TOOLS_TTL_SECONDS * 1000, cacheScope="public")
    return result


def _tools_call(exchange: _Exchange) -> dict:
    params = exchange.params
    meta = params.get("_meta")
    try:
        return mcp_tools.tool_call(name=params.get("name"), arguments=params.get("arguments"), meta=meta,
                                   api_key=api_key_presented(exchange.request.headers),
                                   client_address=client_address(exchange.request))
    except mcp_tools.InvalidParams as invalid:
        raise _RpcError(INVALID_PARAMS, str(invalid)) from None


_HANDSHAKE_METHODS = {"initialize": _initialize, "ping": _ping, "tools/list": _tools_list, "tools/call": _tools_call}
# 2026-07-28 has no ping: a stateless server has no connection to keep alive.
_MODERN_METHODS = {"server/discover": _discover, "tools/list": _tools_list, "tools/call": _tools_call}


def _modern_check(request, message: dict) -> str:
    """The stateless era's envelope rules, in the SDK's order; returns the request's protocol version."""
    meta = message.get("params", {}).get("_meta")
    if not isinstance(meta, dict) or PROTOCOL_VERSION_META_KEY not in meta \
            or CLIENT_CAPABILITIES_META_KEY not in meta:
        raise _RpcError(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_META_KEY!r} and "
                                        f"{CLIENT_CAPABILITIES_META_KEY!r}")
    version = meta[PROTOCOL_VERSION_META_KEY]
    if request.headers.get("MCP-Protocol-Version") != version:
        raise _RpcError(HEADER_MISMATCH, "MCP-Protocol-Version header does not match params._meta's protocol version")
    method = message["method"]
    if request.headers.get("Mcp-Method") != method:
        raise _RpcError(HEADER_MISMATCH, "Mcp-Method header does not match the request's method")
    if method == "tools/call" and request.headers.get("Mcp-Name") != message["params"].get("name"):
        raise _RpcError(HEADER_MISMATCH, "Mcp-Name header does not match the tool named in params.name")
    if not isinstance(version, str):
        raise _RpcError(INVALID_PARAMS, "the protocol version in params._meta must be a string")
    if version not in MODERN_VERSIONS:
        raise _unsupported(version)
    return version


def _one(request, message, header_version: str | None) -> HttpResponse:
    try:
        _envelope_check(message)
    except _RpcError as error:
        error.http_status = 400
        echoed = message.get("id") if isinstance(message, dict) else None
        return _error_response(error, echoed if _valid_id(echoed) else None)
    params_meta = (message.get("params") or {}).get("_meta")
    modern = header_version in MODERN_VERSIONS or (
        header_version is None and isinstance(params_meta, dict) and PROTOCOL_VERSION_META_KEY in params_meta)
    is_notification = "id" not in message
    request_id = None
    try:
        if not is_notification:
            request_id = _request_id(message)
        if modern:
            version = _modern_check(request, message) if not is_notification else header_version
        else:
            version = header_version or UNSTATED_VERSION
            if version not in HANDSHAKE_VERSIONS:
                raise _unsupported(version)
        if is_notification:
            # Nothing in this server acts on a client notification (initialized, cancelled, ...).
            return HttpResponse(status=202)
        result = _Exchange(request, message, version, modern=modern).answer()
    except _RpcError as error:
        if is_notification and error.http_status is None:
            error.http_status = 400
        return _error_response(error, request_id, modern=modern)
    return _json({"jsonrpc": "2.0", "id": request_id, "result": result})


def _batch(request, messages: list) -> HttpResponse:
    """A 2025-03-26 batch: each request answered in turn, notifications acknowledged by omission."""
    if not messages or len(messages) > BATCH_LIMIT:
        return _error_response(_RpcError(INVALID_REQUEST, f"a batch holds 1 to {BATCH_LIMIT} messages",
                                          http_status=400))
    answers = []
    for message in messages:
        if isinstance(message, dict) and message.get("method") == "initialize":
            answers.append(_error_body(_RpcError(INVALID_REQUEST, "initialize must not be part of a batch"),
                                       message.get("id")))
            continue
        response = _one(request, message, UNSTATED_VERSION)
        if response.status_code != 202:
            answers.append(json.loads(response.content))
    if not answers:
        return HttpResponse(status=202)
    return _json(answers)


@csrf_exempt
def mcp_endpoint(request):
    """POST one JSON-RPC message (or, at 2025-03-26, a batch); GET and DELETE are 405 (no streams, no sessions)."""
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return _preflight(origin)
    return _cross_origin(_answer(request, origin), origin)


def _answer(request, origin: str | None) -> HttpResponse:
    if request.method != "POST":
        response = HttpResponse(status=405)
        response["Allow"] = "POST"
        return response
    if not _origin_allowed(origin):
        return _error_response(_RpcError(INVALID_REQUEST, "Origin is not allowed to use this MCP endpoint",
                                          http_status=403))
    if not _accepts_json(request.headers.get("Accept") or "application/json"):
        return _error_response(_RpcError(INVALID_REQUEST, "Accept must include application/json", http_status=406))
    if (request.content_type or "").lower() != "application/json":
        return _error_response(_RpcError(INVALID_REQUEST, "Content-Type must be application/json",
                                         http_status=415))
    header_version = request.headers.get("MCP-Protocol-Version")
    try:
        raw = _read_body(request)
        try:
            message = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _RpcError(PARSE_ERROR, "Parse error: the body is not JSON", http_status=400) from None
        if isinstance(message, list):
            if (header_version or UNSTATED_VERSION) != UNSTATED_VERSION:
                raise _RpcError(INVALID_REQUEST, f"JSON-RPC batches are not allowed at protocol version "
                                                 f"{header_version} (only at {UNSTATED_VERSION})", http_status=400)
            return _batch(request, message)
    except _RpcError as error:
        return _error_response(error)
    return _one(request, message, header_version)

"""The sandbox Alibaba Cloud RPC gateway, served at /sandbox/aliyun/<product>/.

In sandbox mode Server402 sends its real, signed HTTP requests here instead of
to <product>.cn-shanghai.aliyuncs.com. The emulator behaves like the gateway
where a client can tell: it checks HMAC-SHA1 (RPC v1) and ACS3-HMAC-SHA256
signatures made with the published sandbox key pair, timestamps and nonces,
the product's version, the action's required parameters and URL schemes, and
answers with the action's documented example (catalog/reference/upstream_actions.json)
or with an error body shaped like Alibaba's. Async actions are queued and then
reported by GetAsyncJobResult as QUEUING, PROCESSING and PROCESS_SUCCESS.

Reserved image URLs on the host `sandbox.invalid` make failures reproducible
from outside: /error/<Code>, /slow/<milliseconds> and /reset; for an async
action, /job/<FinalStatus>[/<ErrorCode>] ends its job in PROCESS_FAILED,
TIMEOUT_FAILED or LIMIT_RETRY_FAILED, and /job/stuck keeps it PROCESSING.
"""

import copy
import functools
import hashlib
import hmac
import json
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt

from catalog import aliyun_signing as signing

ACTIONS_FILE = Path(__file__).resolve().parent / "reference" / "upstream_actions.json"
REGION = "cn-shanghai"
# Alibaba rejects timestamps more than 15 minutes off and remembers nonces as long.
SKEW_SECONDS = NONCE_SECONDS = 15 * 60
JOB_SECONDS = 24 * 60 * 60
SLOW_CAP_MS = 60_000
RESERVED_HOST = "sandbox.invalid"
RPC_COMMON = ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp",
              "Action", "Version")
# Successive GetAsyncJobResult polls of one job; the last one repeats.
JOB_STATUSES = ("QUEUING", "PROCESSING", "PROCESS_SUCCESS")
# The ends a reserved /job/<Status> URL can give a job instead (seed 003, GetAsyncJobResult).
JOB_FAILURES = ("PROCESS_FAILED", "TIMEOUT_FAILED", "LIMIT_RETRY_FAILED")
JOB_STUCK = "stuck"
ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
URL_NAME = re.compile(r"(URL|Url|url)$")

# Codes a reserved /error/<Code> URL can produce: seed 003 section 8 (image
# codes, and Throttling.User as a 400), the per-action codes of the metadata,
# and the gateway codes of the signing notes. Anything else answers 400.
DOCUMENTED_ERRORS = {
    "InvalidImage.URL": (400, "The image URL is invalid."),
    "InvalidImage.Content": (400, "The image content is invalid."),
    "InvalidImage.Decode": (400, "The image could not be decoded."),
    "InvalidImage.Download": (400, "The image could not be downloaded."),
    "InvalidImage.Region": (400, "The image is not stored in the region of the service (cn-shanghai)."),
    "InvalidImage.Resolution": (400, "The image resolution does not meet the requirements of this API."),
    "InvalidImage.Unsafe": (400, "The URL is unsafe."),
    "IllegalUrlParameter": (400, "The URL is not valid."),
    "InvalidParameter": (400, "The specified parameter is not valid."),
    "InvalidParameter.TooLarge": (400, "The content to analyse is larger than this API accepts."),
    "ParameterError": (400, "The parameter is invalid. Please check again."),
    "Throttling": (400, "Request was denied due to flow control."),
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "InvalidTimeStamp.Expired": (400, "Specified time stamp or date value is expired."),
    "InvalidAccessKeyId.Inactive": (400, "Specified access key is disabled."),
    "AuthFailed": (403, "An error occurred while performing authorization. Please check your RAM configuration."),
    "InvalidApi.NotPurchase": (403, "Specified api is not purchased: activate the service first."),
    "UnsupportedHTTPMethod": (403, "This HTTP method is not supported by the API."),
    "RamRoleAuth": (403, "The RAM role is not authorized for this API."),
    "Forbidden.RAM": (403, "User not authorized to operate on the specified resource, "
                           "or this API doesn't support RAM."),
    "NoPermission": (403, "You are not authorized to perform this operation."),
    "InvalidAccessKeyId.NotFound": (404, "Specified access key is not found."),
    "Timeout": (408, "The request has timed out."),
    "InternalError": (500, "The request processing has failed due to some unknown error, exception or failure."),
    "InternalServerError": (500, "The request processing has failed due to some unknown error, exception or failure."),
    "ServiceUnavailable": (503, "The service is unavailable."),
}


class AliyunError(Exception):
    """An answer in Alibaba's error shape: HTTP status, Code and Message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class DropConnection(Exception):
    """A reserved /reset URL: close the connection without any HTTP answer."""


@dataclass(frozen=True)
class SignedCall:
    """What the gateway reads from a request before it knows the action."""

    access_key_id: str
    action: str
    version: str
    timestamp: str
    nonce: str
    signature: str
    params: dict[str, str]
    # The server's signature for a given secret, and what it signed (echoed on mismatch, as Alibaba does).
    sign: Callable[[str], str]
    signed_text: str


@functools.cache
def upstream_actions() -> dict:
    """{product: {"version", "actions": {action: {...}}}}, read once per process."""
    return json.loads(ACTIONS_FILE.read_text())


@csrf_exempt
def aliyun_emulator(request: HttpRequest, product: str) -> JsonResponse:
    """Answer one RPC call to `product` as Alibaba Cloud's gateway would."""
    request_id = str(uuid.uuid4()).upper()
    try:
        # Every answer, refusals included: a health probe's parameter error takes as long as a result.
        time.sleep(settings.SANDBOX_LATENCY_MS / 1000)
        if request.method not in ("GET", "POST"):
            raise AliyunError(403, "UnsupportedHTTPMethod", DOCUMENTED_ERRORS["UnsupportedHTTPMethod"][1])
        call = authenticate(request)
        spec = resolve_action(product, call.action, call.version)
        check_parameters(spec, call.params)
        apply_reserved_urls(call.params, async_action=spec["async"])
        return json_response(success_body(product, call, spec, request_id))
    except AliyunError as error:
        return error_response(error, product, request_id)
    except DropConnection:
        return drop_connection(request, product, request_id)


# --- Signatures -------------------------------------------------------------


def authenticate(request: HttpRequest) -> SignedCall:
    """Parse either signature scheme, then check key, clock, signature and nonce, in that order."""
    body = request.body
    if request.headers.get("Authorization", "").startswith(signing.ACS3):
        call = acs3_call(request, body)
    else:
        call = rpc_call(request, body)
    if call.access_key_id != settings.SANDBOX_ACCESS_KEY_ID:
        raise AliyunError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    check_timestamp(call.timestamp)
    expected = call.sign(settings.SANDBOX_ACCESS_KEY_SECRET)
    if not hmac.compare_digest(expected.encode(), call.signature.encode()):
        raise AliyunError(
            400,
            "SignatureDoesNotMatch",
            f"Specified signature is not matched with our calculation. server string to sign is:{call.signed_text}",
        )
    # Only a correctly signed request may use up its nonce: a forged one must not block the real one.
    if not cache.add(nonce_key(call), 1, timeout=NONCE_SECONDS):
        raise AliyunError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
    return call


def request_parameters(request: HttpRequest, body: bytes) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The query string as signed pairs, and query plus form body merged (the SDKs split them so)."""
    query = [(key, value) for key, values in request.GET.lists() for value in values]
    params = dict(query)
    if request.content_type == "application/x-www-form-urlencoded":
        params.update(QueryDict(body, encoding=request.encoding or "utf-8").dict())
    return query, params


def rpc_call(request: HttpRequest, body: bytes) -> SignedCall:
    """HMAC-SHA1 over every query and form parameter except Signature (seed 003, section 7.2)."""
    _, params = request_parameters(request, body)
    for name in RPC_COMMON:
        require(name, params.get(name))
    if params["SignatureMethod"] != "HMAC-SHA1":
        raise AliyunError(400, "InvalidSignatureMethod", "Specified signature method is not supported.")
    if params["SignatureVersion"] != "1.0":
        raise AliyunError(400, "InvalidSignatureVersion", "Specified signature version is not supported.")
    signed = {key: value for key, value in params.items() if key != "Signature"}
    return SignedCall(
        access_key_id=params["AccessKeyId"],
        action=params["Action"],
        version=params["Version"],
        timestamp=params["Timestamp"],
        nonce=params["SignatureNonce"],
        signature=params["Signature"],
        params=params,
        sign=functools.partial(signing.rpc_signature, request.method, signed),
        signed_text=signing.rpc_string_to_sign(request.method, signed),
    )


def acs3_call(request: HttpRequest, body: bytes) -> SignedCall:
    """ACS3-HMAC-SHA256: action, version, date and nonce travel in signed x-acs-* headers."""
    authorization = signing.acs3_parse_authorization(request.headers["Authorization"])
    if authorization is None:
        raise AliyunError(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
    signed_headers = [name.strip().lower() for name in authorization["SignedHeaders"].split(";") if name.strip()]
    unsigned = set(signing.ACS3_SIGNED_HEADERS) - set(signed_headers)
    if unsigned:
        raise AliyunError(400, "IncompleteSignature", f"These headers must be signed: {', '.join(sorted(unsigned))}.")
    # Signed exactly as received: Host included, so a request signed for another host fails here.
    headers = {name: request.headers.get(name) for name in signed_headers}
    for rpc_name, header in (("Action", "x-acs-action"), ("Version", "x-acs-version"),
                             ("Timestamp", "x-acs-date"), ("SignatureNonce", "x-acs-signature-nonce")):
        require(rpc_name, headers.get(header))
    missing = sorted(name for name, value in headers.items() if value is None)
    if missing:
        raise AliyunError(400, "IncompleteSignature", f"Signed headers are missing: {', '.join(missing)}.")
    if headers["x-acs-content-sha256"] != signing.sha256_hex(body):
        raise AliyunError(400, "SignatureDoesNotMatch", "x-acs-content-sha256 is not the SHA-256 of the request body.")
    query, params = request_parameters(request, body)
    arguments = (request.method, query, headers, signed_headers, body)
    return SignedCall(
        access_key_id=authorization["Credential"],
        action=headers["x-acs-action"],
        version=headers["x-acs-version"],
        timestamp=headers["x-acs-date"],
        nonce=headers["x-acs-signature-nonce"],
        signature=authorization["Signature"],
        params=params,
        sign=functools.partial(signing.acs3_signature, *arguments),
        signed_text=signing.acs3_canonical_request(*arguments),
    )


def check_timestamp(value: str) -> None:
    """ISO 8601 UTC (`YYYY-MM-DDThh:mm:ssZ`, milliseconds tolerated), within 15 minutes of now."""
    for pattern in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            moment = datetime.strptime(value, pattern).replace(tzinfo=UTC)
            break
        except ValueError:
            continue
    else:
        raise AliyunError(400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
    if abs((datetime.now(UTC) - moment).total_seconds()) > SKEW_SECONDS:
        raise AliyunError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")


def nonce_key(call: SignedCall) -> str:
    # Hashed: a nonce is client-chosen text, and cache keys must stay short and plain.
    digest = hashlib.sha256(f"{call.access_key_id}\n{call.nonce}".encode()).hexdigest()
    return f"sandbox-aliyun:nonce:{digest}"


# --- Actions and parameters -------------------------------------------------


def resolve_action(product: str, action: str, version: str) -> dict:
    """The action's entry in upstream_actions.json, or the gateway's not-found and version errors."""
    known = upstream_actions().get(product)
    if known is None:
        raise AliyunError(404, "InvalidApi.NotFound", f"Specified api is not found: product {product} is unknown.")
    if version != known["version"]:
        raise AliyunError(400, "InvalidVersion", f"Specified parameter Version is not valid for {product}.")
    spec = known["actions"].get(action)
    if spec is None:
        raise AliyunError(404, "InvalidApi.NotFound", f"Specified api is not found: {product} has no {action}.")
    return spec


def require(name: str, value: str | None) -> None:
    if not value:
        raise AliyunError(400, f"Missing{name}", f"{name} is mandatory for this action.")


def present(name: str, params: dict[str, str]) -> bool:
    """A plain or JSON-encoded value, or a repeat list flattened as Name.1, Name.1.Field..."""
    return bool(params.get(name)) or any(key.startswith(f"{name}.") and value for key, value in params.items())


def check_parameters(spec: dict, params: dict[str, str]) -> None:
    """Required parameters present, URL parameters (top-level or inside repeat lists) http or https."""
    for parameter in spec["parameters"]:
        if parameter["required"] and not present(parameter["name"], params):
            require(parameter["name"], None)
    url_names = {parameter["name"] for parameter in spec["parameters"] if parameter["url"]}
    for key, value in sorted(params.items()):
        is_url = key in url_names or ("." in key and URL_NAME.search(key))
        if is_url and value and urlsplit(value).scheme.lower() not in ("http", "https"):
            raise AliyunError(400, "InvalidParameter", f"Specified parameter {key} is not valid: "
                                                       "only http and https URLs are accepted.")


# --- Reserved URLs ----------------------------------------------------------


def strings_in(value) -> Iterator[str]:
    """Every string in a parameter value, looking inside JSON-encoded arrays and objects."""
    if isinstance(value, str):
        yield value
        if value[:1] in ("[", "{"):
            try:
                yield from strings_in(json.loads(value))
            except ValueError:
                pass
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)


def reserved_paths(params: dict[str, str]) -> list[str]:
    """Paths of every http(s) URL on sandbox.invalid among the parameter values, in key order."""
    paths = []
    for key in sorted(params):
        for text in strings_in(params[key]):
            try:
                url = urlsplit(text.strip())
                host = url.hostname
            except ValueError:
                continue
            if url.scheme.lower() in ("http", "https") and host == RESERVED_HOST:
                paths.append(url.path)
    return paths


def reserved_job_end(params: dict[str, str]) -> tuple[str, str]:
    """(final status, error code) a reserved /job/... URL asks of an async job; ("", "") for none."""
    for path in reserved_paths(params):
        kind, _, argument = path.strip("/").partition("/")
        status, _, code = argument.partition("/")
        if kind == "job" and (status in JOB_FAILURES or status == JOB_STUCK):
            return status, code if ERROR_CODE.fullmatch(code) else ""
    return "", ""


def apply_reserved_urls(params: dict[str, str], *, async_action: bool = False) -> None:
    """Sleep for /slow/<ms>, raise for /error/<Code> and /reset; other paths cannot be downloaded.

    /job/... is left to the async job it describes (see reserved_job_end).
    """
    for path in reserved_paths(params):
        kind, _, argument = path.strip("/").partition("/")
        if kind == "job" and async_action:
            continue
        if kind == "slow" and argument.isdigit():
            time.sleep(min(int(argument), SLOW_CAP_MS) / 1000)
        elif kind == "error" and ERROR_CODE.fullmatch(argument):
            status, message = DOCUMENTED_ERRORS.get(argument, (400, f"The request failed with {argument}."))
            raise AliyunError(status, argument, message)
        elif kind == "reset" and not argument:
            raise DropConnection
        else:
            # What Alibaba would answer: a .invalid host never resolves.
            raise AliyunError(400, "InvalidImage.Download", DOCUMENTED_ERRORS["InvalidImage.Download"][1])


def drop_connection(request: HttpRequest, product: str, request_id: str) -> JsonResponse:
    """Shut the client's socket so it gets no answer at all; only gunicorn lets a view reach it."""
    sock = request.META.get("gunicorn.socket")
    if sock is None:
        error = AliyunError(500, "Sandbox.ResetUnsupported",
                            "This server cannot drop a connection from a view; serve Server402 with gunicorn.")
        return error_response(error, product, request_id)
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    # gunicorn fails to write this (EPIPE), logs it at debug level and closes the connection.
    return json_response({"RequestId": request_id})


# --- Answers ----------------------------------------------------------------


def success_body(product: str, call: SignedCall, spec: dict, request_id: str) -> dict:
    """The documented example with a fresh RequestId; async actions queue a job instead."""
    if call.action == "GetAsyncJobResult":
        return job_result(product, call.params["JobId"], request_id)
    example = copy.deepcopy(spec["example"])
    if spec["async"]:
        end, code = reserved_job_end(call.params)
        job_submit(product, call.action, example.get("Data", {}), request_id, end=end, code=code)
        # As the metadata's XML example shows: the submit answers only its id (the JobId) and a note.
        return {"RequestId": request_id, **({"Message": example["Message"]} if "Message" in example else {})}
    return {"RequestId": request_id, **{key: value for key, value in example.items() if key != "RequestId"}}


def job_key(job_id: str) -> str:
    return f"sandbox-aliyun:job:{hashlib.sha256(job_id.encode()).hexdigest()}"


def job_submit(product: str, action: str, data: dict, job_id: str, *, end: str = "", code: str = "") -> None:
    cache.set(job_key(job_id), {"product": product, "action": action, "data": data, "end": end, "code": code},
              timeout=JOB_SECONDS)


def job_polls(job_id: str) -> int:
    """How many times the job has been polled, this poll included, counted in the shared cache."""
    key = f"{job_key(job_id)}:polls"
    cache.add(key, 0, timeout=JOB_SECONDS)
    try:
        polls = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=JOB_SECONDS)
        return 1
    # The file cache's incr rewrites the key with the default timeout; keep the job's day.
    cache.touch(key, timeout=JOB_SECONDS)
    return polls


def job_result(product: str, job_id: str, request_id: str) -> dict:
    """QUEUING, then PROCESSING, then PROCESS_SUCCESS with Result as a JSON string, as Alibaba sends it."""
    job = cache.get(job_key(job_id))
    # viapi's GetAsyncJobResult answers for jobs of every product.
    if job is None or product not in (job["product"], "viapi"):
        raise AliyunError(400, "InvalidParameter", f"Specified parameter JobId is not valid: no job {job_id}.")
    status = JOB_STATUSES[min(job_polls(job_id), len(JOB_STATUSES)) - 1]
    end = job.get("end", "")
    if status == "PROCESS_SUCCESS" and end:
        status = "PROCESSING" if end == JOB_STUCK else end
    data = {"JobId": job_id, "Status": status}
    if status == "PROCESS_SUCCESS":
        data["Result"] = json.dumps(job["data"], ensure_ascii=False, separators=(",", ":"))
    elif status in JOB_FAILURES:
        data["ErrorCode"] = job.get("code") or status
        data["ErrorMessage"] = DOCUMENTED_ERRORS.get(data["ErrorCode"], (0, f"The job ended in {status}."))[1]
    return {"RequestId": request_id, "Data": data}


def json_response(body: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(
        body, status=status, content_type="application/json;charset=utf-8", json_dumps_params={"ensure_ascii": False}
    )


def error_response(error: AliyunError, product: str, request_id: str) -> JsonResponse:
    """Alibaba's error body: RequestId, HostId, Code, Message and a troubleshooting link."""
    query = urlencode({"q": error.code, "product": product, "requestId": request_id})
    return json_response(
        {
            "RequestId": request_id,
            "HostId": f"{product}.{REGION}.aliyuncs.com",
            "Code": error.code,
            "Message": error.message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?{query}",
        },
        status=error.status,
    )

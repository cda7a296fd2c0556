"""The Alibaba Cloud RPC client: signs, sends with one pooled httpx client, retries what is safe.

In sandbox mode the same code talks to the emulator Server402 serves itself
(settings.ALIBABA_CLOUD_ENDPOINT defaults to it over loopback), signed with
the published sandbox key pair; in live mode to `<product>.<region>.aliyuncs.com`
with the operator's AccessKey. Nothing else differs between the modes.
"""

import json
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
from django.conf import settings

from catalog import aliyun_signing as signing

# Gateway codes that mean "slow down"; Alibaba answers them with a 400.
THROTTLING = "Throttling"
RETRYABLE_STATUSES = {500, 502, 503, 504}
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 1.0


@dataclass(frozen=True)
class UpstreamAnswer:
    status: int
    request_id: str
    body: dict
    latency_ms: int
    attempts: int


class UpstreamError(Exception):
    """A call that produced no result. `kind` says whose fault it was, for the caller's mapping.

    kinds: client (the request's input was refused), server (5xx, or an answer
    that is not Alibaba's JSON), auth (our credentials or subscription),
    throttled, timeout, unreachable, unconfigured (no credentials).
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, code: str = "",
                 request_id: str = "", latency_ms: int = 0, attempts: int = 1):
        super().__init__(message)
        self.kind, self.message, self.status, self.code = kind, message, status, code
        self.request_id, self.latency_ms, self.attempts = request_id, latency_ms, attempts


# Codes that describe the caller's input, so the caller gets a 400 with the code.
_CLIENT_CODE_PREFIXES = ("InvalidImage", "InvalidParameter", "InvalidFile", "InvalidVideo", "Missing",
                         "ParameterError", "InvalidInput", "InvalidUrl", "InvalidURL")
# Gateway codes about our own credentials, signature or subscription: the caller cannot fix them.
_AUTH_CODE_PREFIXES = ("AuthFailed", "InvalidAccessKeyId", "SignatureDoesNotMatch", "SignatureNonceUsed",
                       "InvalidTimeStamp", "Forbidden", "NoPermission", "InvalidApi", "InvalidSecurityToken",
                       "InvalidVersion", "InvalidProduct")


def classify(status: int, code: str) -> str:
    if code.startswith(THROTTLING):
        return "throttled"
    if status >= 500:
        return "server"
    if code.startswith(_AUTH_CODE_PREFIXES) or status in (401, 403, 404):
        return "auth"
    if code.startswith(_CLIENT_CODE_PREFIXES) or status in (400, 413, 414, 422):
        return "client"
    return "server"


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _repeat_list(name: str, items: list) -> dict[str, str]:
    """`Tasks=[{"ImageURL": u}]` -> `Tasks.1.ImageURL=u`, the RPC form of a list."""
    flat = {}
    for index, item in enumerate(items, start=1):
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, list):
                    flat.update(_repeat_list(f"{name}.{index}.{key}", value))
                else:
                    flat[f"{name}.{index}.{key}"] = _scalar(value)
        else:
            flat[f"{name}.{index}"] = _scalar(item)
    return flat


def request_parameters(method: str, binding: dict, arguments: dict) -> tuple[dict, dict]:
    """(query, form) for the API parameters, placed as the service's binding says."""
    query, form = {}, {}
    for name, value in arguments.items():
        place = binding.get(name, {})
        target = query if method == "GET" or place.get("in") == "query" else form
        if place.get("style") == "repeatList" and isinstance(value, list):
            target.update(_repeat_list(name, value))
        else:
            target[name] = _scalar(value)
    return query, form


def _credentials() -> tuple[str, str] | None:
    if settings.SANDBOX:
        return settings.SANDBOX_ACCESS_KEY_ID, settings.SANDBOX_ACCESS_KEY_SECRET
    if settings.ALIBABA_CLOUD_ACCESS_KEY_ID:
        return settings.ALIBABA_CLOUD_ACCESS_KEY_ID, settings.ALIBABA_CLOUD_ACCESS_KEY_SECRET
    return None


def endpoint(product: str) -> str:
    return settings.ALIBABA_CLOUD_ENDPOINT.format(product=product) + "/"


_pool_lock = threading.Lock()
_pool: tuple[tuple, httpx.Client] | None = None


def http_client() -> httpx.Client:
    """One pooled client per process (rebuilt after a fork or when the timeouts change)."""
    global _pool
    key = (os.getpid(), settings.ALIBABA_CLOUD_CONNECT_TIMEOUT, settings.ALIBABA_CLOUD_READ_TIMEOUT)
    with _pool_lock:
        if _pool is None or _pool[0] != key:
            timeout = httpx.Timeout(
                connect=settings.ALIBABA_CLOUD_CONNECT_TIMEOUT,
                read=settings.ALIBABA_CLOUD_READ_TIMEOUT,
                write=settings.ALIBABA_CLOUD_READ_TIMEOUT,
                pool=settings.ALIBABA_CLOUD_CONNECT_TIMEOUT,
            )
            # A server must keep idle connections open longer than this, or a POST can go out on a
            # connection it is closing (and a sent POST is not retried): the Procfile gives the
            # sandbox's gunicorn --keep-alive 75.
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30)
            _pool = (key, httpx.Client(timeout=timeout, limits=limits, follow_redirects=False))
        return _pool[1]


def _signed_request(method: str, product: str, version: str, action: str, query: dict, form: dict,
                    credentials: tuple[str, str]) -> httpx.Request:
    """A request signed afresh: every attempt needs its own nonce, timestamp and signature."""
    access_key_id, secret = credentials
    url = endpoint(product)
    nonce, now = uuid.uuid4().hex, signing.timestamp()
    body = str(httpx.QueryParams(form)).encode() if form else b""
    if settings.ALIBABA_CLOUD_SIGNATURE == "acs3-hmac-sha256":
        headers = {
            "host": httpx.URL(url).netloc.decode(),
            "x-acs-action": action,
            "x-acs-version": version,
            "x-acs-date": now,
            "x-acs-signature-nonce": nonce,
            "x-acs-content-sha256": signing.sha256_hex(body),
        }
        if form:
            headers["content-type"] = "application/x-www-form-urlencoded"
        signature = signing.acs3_signature(method, query, headers, headers, body, secret)
        headers["Authorization"] = signing.acs3_authorization(access_key_id, headers, signature)
        return httpx.Request(method, url, params=query, headers=headers, content=body)
    common = {
        "Action": action, "Version": version, "Format": "JSON", "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0", "SignatureNonce": nonce, "Timestamp": now,
    }
    signed_query = {**common, **query}
    signed_query["Signature"] = signing.rpc_signature(method, {**signed_query, **form}, secret)
    headers = {"content-type": "application/x-www-form-urlencoded"} if form else {}
    return httpx.Request(method, url, params=signed_query, headers=headers, content=body)


def _error_from(response: httpx.Response, latency_ms: int, attempts: int) -> UpstreamError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or "Code" not in payload:
        return UpstreamError("server", f"upstream answered HTTP {response.status_code} without an error body",
                             status=response.status_code, latency_ms=latency_ms, attempts=attempts)
    code = str(payload.get("Code"))
    return UpstreamError(classify(response.status_code, code), str(payload.get("Message") or code),
                         status=response.status_code, code=code, request_id=str(payload.get("RequestId") or ""),
                         latency_ms=latency_ms, attempts=attempts)


def longest_call_seconds() -> float:
    """The longest a call() can take, every attempt and back-off included."""
    return settings.ALIBABA_CLOUD_ATTEMPTS * (
        settings.ALIBABA_CLOUD_CONNECT_TIMEOUT + settings.ALIBABA_CLOUD_READ_TIMEOUT + BACKOFF_CAP_SECONDS)


def longest_service_call_seconds() -> float:
    """The longest a synchronous call_service() can take: an async action's submission, wait and last poll."""
    return 2 * longest_call_seconds() + settings.ALIBABA_CLOUD_ASYNC_WAIT_SECONDS


def _backoff(attempt: int) -> float:
    # Full jitter keeps many callers from retrying in step.
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def call(*, product: str, version: str, action: str, method: str = "POST",
         query: dict | None = None, form: dict | None = None, attempts: int | None = None) -> UpstreamAnswer:
    """Send one signed RPC request; raise UpstreamError when it yields no result.

    Retried, with a fresh signature each time: connection failures before the
    request was sent, 500/502/503/504 and Throttling; a GET also on a read
    timeout. A POST that timed out after it was sent is not repeated: it may
    have run (and been billed) upstream. `attempts` overrides
    ALIBABA_CLOUD_ATTEMPTS (a health probe wants the first answer, not a retried one).
    """
    credentials = _credentials()
    if credentials is None:
        raise UpstreamError("unconfigured", "Alibaba Cloud credentials are not configured on this server")
    client = http_client()
    started = time.monotonic()
    attempts_allowed = attempts or settings.ALIBABA_CLOUD_ATTEMPTS
    for attempt in range(1, attempts_allowed + 1):
        request = _signed_request(method.upper(), product, version, action, query or {}, form or {}, credentials)
        retry_safe_timeout = method.upper() == "GET"
        try:
            response = client.send(request)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            failure = UpstreamError("unreachable", f"could not connect to the upstream: {error.__class__.__name__}")
            retryable = True
        except httpx.TimeoutException:
            failure = UpstreamError("timeout", "the upstream did not answer in time")
            retryable = retry_safe_timeout
        except httpx.TransportError as error:
            failure = UpstreamError("server", f"the upstream connection failed: {error.__class__.__name__}")
            # The request may have reached the upstream; only a GET is safe to send again.
            retryable = retry_safe_timeout
        else:
            latency_ms = round((time.monotonic() - started) * 1000)
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    return UpstreamAnswer(200, str(body.get("RequestId") or ""), body, latency_ms, attempt)
                failure = UpstreamError("server", "upstream answered 200 without a JSON object",
                                        status=200, latency_ms=latency_ms, attempts=attempt)
                retryable = False
            else:
                failure = _error_from(response, latency_ms, attempt)
                retryable = response.status_code in RETRYABLE_STATUSES or failure.kind == "throttled"
        failure.attempts = attempt
        failure.latency_ms = round((time.monotonic() - started) * 1000)
        if not retryable or attempt == attempts_allowed:
            raise failure
        time.sleep(_backoff(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


# GetAsyncJobResult's statuses (seed 003): still running, done, and the failures with the kind each one is.
ASYNC_RUNNING = ("QUEUING", "PROCESSING")
ASYNC_SUCCEEDED = "PROCESS_SUCCESS"
ASYNC_FAILED = {"PROCESS_FAILED": "server", "TIMEOUT_FAILED": "timeout", "LIMIT_RETRY_FAILED": "server"}
# The code of an async job that was still running when its caller stopped waiting.
ASYNC_JOB_TIMEOUT = "AsyncJobTimeout"
# Polls that may fail in a row (each already retried by call()) before the job is given up.
POLL_FAILURES_ALLOWED = 3


def parsed_result(result):
    """GetAsyncJobResult's Result is a JSON string (sometimes a JSON string of one): the object it holds."""
    for _ in range(3):
        if not isinstance(result, str) or result.strip()[:1] not in ("{", "[", '"'):
            return result
        try:
            result = json.loads(result)
        except ValueError:
            return result
    return result


def async_job_wait(*, product: str, version: str, job_id: str, wait_seconds: float, progress=None,
                   started: float | None = None, attempts: int = 0) -> UpstreamAnswer:
    """Poll GetAsyncJobResult for `job_id` until it ends, with doubling intervals; the result's answer.

    PROCESS_SUCCESS answers `{"RequestId": job_id, "Data": <Result parsed>}`;
    the failed statuses, a job still running after `wait_seconds`, and polls
    failing POLL_FAILURES_ALLOWED times in a row raise UpstreamError.
    `progress(job_id, status)` hears every poll (status "" for one that
    failed), and may raise to stop.
    """
    started = time.monotonic() if started is None else started
    deadline = time.monotonic() + wait_seconds
    interval = settings.ALIBABA_CLOUD_POLL_SECONDS
    failures = 0
    while True:
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        try:
            # GET: a poll is safe to repeat, so call() retries it on a timeout too.
            answer = call(product=product, version=version, action="GetAsyncJobResult", method="GET",
                          query={"JobId": job_id})
        except UpstreamError as error:
            attempts += error.attempts
            failures += 1
            if progress is not None:
                # A failed poll takes as long as a good one: the job's holder must hear of it all the same.
                progress(job_id, "")
            if error.kind in ("client", "auth", "unconfigured") or failures >= POLL_FAILURES_ALLOWED:
                # The job's id is what ties the failure to the caller's call; the poll's own id does not.
                error.request_id = job_id
                error.latency_ms, error.attempts = round((time.monotonic() - started) * 1000), attempts
                raise
        else:
            attempts += answer.attempts
            failures = 0
            data = answer.body.get("Data") if isinstance(answer.body.get("Data"), dict) else {}
            status = str(data.get("Status") or "")
            if progress is not None:
                progress(job_id, status)
            latency_ms = round((time.monotonic() - started) * 1000)
            if status == ASYNC_SUCCEEDED:
                return UpstreamAnswer(200, job_id, {"RequestId": job_id, "Data": parsed_result(data.get("Result"))},
                                      latency_ms, attempts)
            if status in ASYNC_FAILED:
                code = str(data.get("ErrorCode") or status)
                # A failure naming the caller's input (an image that cannot be read) is the caller's.
                kind = "client" if code.startswith(_CLIENT_CODE_PREFIXES) else ASYNC_FAILED[status]
                detail = data.get("ErrorMessage") or code
                raise UpstreamError(kind, f"the upstream job ended in {status}: {detail}", code=code,
                                    request_id=job_id, latency_ms=latency_ms, attempts=attempts)
            if status not in ASYNC_RUNNING:
                raise UpstreamError("server", f"the upstream reported the job in an unknown status {status!r}",
                                    request_id=job_id, latency_ms=latency_ms, attempts=attempts)
        if time.monotonic() >= deadline:
            waited = f"{round(wait_seconds, 1):g}"
            raise UpstreamError("timeout", f"the upstream job {job_id} did not finish within {waited} s",
                                code=ASYNC_JOB_TIMEOUT, request_id=job_id,
                                latency_ms=round((time.monotonic() - started) * 1000), attempts=attempts)
        interval = min(interval * 2, settings.ALIBABA_CLOUD_POLL_MAX_SECONDS)


def call_service(service, arguments: dict, *, attempts: int | None = None, wait_seconds: float | None = None,
                 progress=None, resume_job_id: str = "") -> UpstreamAnswer:
    """Call the upstream action a catalog service is bound to, with the caller's arguments.

    An async action's job is submitted, then polled until it ends (at most
    `wait_seconds`, ALIBABA_CLOUD_ASYNC_WAIT_SECONDS by default): the answer is
    the job's result, never the bare job id. `progress(job_id, status)` hears
    the submission ("SUBMITTED") and each poll; `resume_job_id` polls a job
    submitted before (by a worker that died) instead of submitting again.
    """
    method = service.upstream_method or "POST"
    started = time.monotonic()
    if not service.upstream_async:
        query, form = request_parameters(method, service.upstream_parameters or {}, arguments)
        return call(product=service.upstream_product, version=service.upstream_version,
                    action=service.upstream_action, method=method, query=query, form=form, attempts=attempts)
    used = 0
    job_id = resume_job_id
    if not job_id:
        query, form = request_parameters(method, service.upstream_parameters or {}, arguments)
        submitted = call(product=service.upstream_product, version=service.upstream_version,
                         action=service.upstream_action, method=method, query=query, form=form, attempts=attempts)
        job_id, used = submitted.request_id, submitted.attempts
        if not job_id:
            raise UpstreamError("server", "the upstream accepted the job without a RequestId to poll it by",
                                latency_ms=submitted.latency_ms, attempts=used)
        if progress is not None:
            progress(job_id, "SUBMITTED")
    return async_job_wait(product=service.upstream_product, version=service.upstream_version, job_id=job_id,
                          wait_seconds=settings.ALIBABA_CLOUD_ASYNC_WAIT_SECONDS if wait_seconds is None
                          else wait_seconds, progress=progress, started=started, attempts=used)

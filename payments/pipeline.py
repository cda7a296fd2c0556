"""The paid call: the one pipeline behind `POST /api/tools/<id>`, the MCP endpoint and the job worker.

In SPEC's order, every refusal before anything is charged:
resolve -> API key -> input -> payment -> upstream -> settle -> record.
It returns a ToolAnswer (status, JSON body, headers) that each caller renders
in its own protocol; it never raises for a refusal.
"""

import time
from dataclasses import dataclass, field

from django.db import transaction
from rest_framework import status

from catalog import aliyun_client
from catalog.input_validation import input_problems
from catalog.models import Service
from catalog.selectors import closest_service_ids, service_lookup
from payments import challenge, rate_limits
from payments import services as payment_services
from payments.models import ApiKey, Payment, ToolCall
from payments.selectors import ApiKeyRejected, api_key_allows, api_key_authenticate

API_KEY_REQUIRED = "api key required"
API_KEY_NOT_ALLOWED = "api key is not allowed to call this service"


@dataclass
class ToolAnswer:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    call: ToolCall | None = None


class _Refused(Exception):
    def __init__(self, status_code: int, body: dict, headers: dict | None = None):
        super().__init__(body.get("error"))
        self.answer = ToolAnswer(status_code, body, headers or {})


def _resolve(reference: str) -> Service:
    service = service_lookup(reference)
    if service is None:
        raise _Refused(status.HTTP_404_NOT_FOUND, {
            "error": f"service {reference!r} not found", "closestIds": closest_service_ids(reference)})
    if service.state != Service.State.PUBLISHED:
        raise _Refused(status.HTTP_404_NOT_FOUND, {"error": f"service {service.id!r} is not published"})
    if not service.enabled:
        raise _Refused(status.HTTP_503_SERVICE_UNAVAILABLE,
                       {"error": f"service {service.id!r} is disabled by the operator; try again later"})
    return service


def _too_many(message: str, retry_after: int) -> _Refused:
    return _Refused(status.HTTP_429_TOO_MANY_REQUESTS, {"error": message, "retryAfterSeconds": retry_after},
                    {"Retry-After": str(retry_after)})


def _authorize(service: Service, presented_key: str | None) -> ApiKey | None:
    if presented_key is None:
        if service.pricing_policy.require_api_key:
            raise _Refused(status.HTTP_401_UNAUTHORIZED, {"error": API_KEY_REQUIRED})
        return None
    try:
        api_key = api_key_authenticate(presented_key)
    except ApiKeyRejected as rejected:
        raise _Refused(status.HTTP_401_UNAUTHORIZED, {"error": rejected.reason}) from None
    if not api_key_allows(api_key, service):
        raise _Refused(status.HTTP_403_FORBIDDEN, {"error": API_KEY_NOT_ALLOWED})
    if api_key.rate_limit_per_minute is not None:
        wait = rate_limits.window_hit(f"key:{api_key.prefix}", limit=api_key.rate_limit_per_minute,
                                      window_seconds=rate_limits.MINUTE)
        if wait is not None:
            raise _too_many(f"api key rate limit exceeded: {api_key.rate_limit_per_minute} calls per minute", wait)
    if api_key.daily_quota is not None:
        wait = rate_limits.window_hit(f"key:{api_key.prefix}:day", limit=api_key.daily_quota,
                                      window_seconds=rate_limits.DAY)
        if wait is not None:
            raise _too_many(f"api key daily quota exceeded: {api_key.daily_quota} calls per day", wait)
    payment_services.api_key_touch(api_key=api_key)
    return api_key


def _validate(service: Service, arguments) -> None:
    if not isinstance(arguments, dict):
        raise _Refused(status.HTTP_400_BAD_REQUEST, {"error": "request body must be a JSON object"})
    problems = input_problems(service.input_schema, arguments, cache_key=f"{service.pk}")
    if problems:
        (message, parameter), *others = problems
        body = {"error": message, "field": parameter}
        if others:
            body["otherProblems"] = [other for other, _ in others]
        raise _Refused(status.HTTP_400_BAD_REQUEST, body)


def _payment_required(service: Service, reason: str) -> _Refused:
    return _Refused(status.HTTP_402_PAYMENT_REQUIRED, challenge.payment_required_body(service, reason),
                    challenge.payment_required_headers(service, reason))


def _pay(service: Service, api_key: ApiKey | None, payment_token: str | None,
         payment_signature: str | None) -> tuple[Payment, ToolCall]:
    """Reserve the payment for one call and open the call's record, in one transaction."""
    if payment_signature:
        raise _payment_required(service, "x402 payments (PAYMENT-SIGNATURE) are not accepted yet; "
                                         "pay with the legacy token flow")
    if not payment_token:
        raise _payment_required(service, challenge.PAYMENT_REQUIRED)
    with transaction.atomic():
        try:
            payment = payment_services.token_call_reserve(token=payment_token, service=service, api_key=api_key)
        except payment_services.PaymentRefused as refused:
            raise _payment_required(service, refused.reason) from None
        call = payment_services.tool_call_start(service=service, api_key=api_key, payment=payment,
                                                payment_method=ToolCall.PaymentMethod.TOKEN)
    return payment, call


def envelope(action: str, upstream_body: dict, request_id: str) -> dict:
    """Seed 001's answer: the upstream's Data (or its whole answer) under data.Result."""
    result = upstream_body.get("Data", {k: v for k, v in upstream_body.items() if k != "RequestId"})
    return {"code": "200", "content": "", "data": {"Action": action, "Result": result},
            "message": "success", "requestId": request_id}


# How an upstream failure reaches the caller (SPEC, the paid call, step 6).
_FAILURE_STATUS = {
    "client": status.HTTP_400_BAD_REQUEST,
    "auth": status.HTTP_502_BAD_GATEWAY,
    "server": status.HTTP_502_BAD_GATEWAY,
    "unreachable": status.HTTP_502_BAD_GATEWAY,
    "throttled": status.HTTP_503_SERVICE_UNAVAILABLE,
    "timeout": status.HTTP_504_GATEWAY_TIMEOUT,
    "unconfigured": status.HTTP_503_SERVICE_UNAVAILABLE,
}
_FAILURE_OUTCOME = {
    "client": ToolCall.Outcome.CLIENT_ERROR,
    "timeout": ToolCall.Outcome.TIMEOUT,
    "unconfigured": ToolCall.Outcome.UNCONFIGURED,
}


def _failure_message(error: aliyun_client.UpstreamError) -> str:
    if error.kind == "client":
        return error.message
    if error.kind == "auth":
        return f"the upstream refused this server's credentials or subscription ({error.code}); the operator is told"
    if error.kind == "throttled":
        return "the upstream is throttling requests; retry shortly"
    if error.kind == "timeout":
        return "the upstream did not answer in time"
    if error.kind == "unconfigured":
        return "this server has no upstream credentials configured"
    return f"the upstream failed: {error.message}"


def _settle(service: Service, payment: Payment, call: ToolCall, arguments: dict) -> ToolAnswer:
    started = time.monotonic()
    try:
        answer = aliyun_client.call_service(service, arguments)
    except aliyun_client.UpstreamError as error:
        # No result, no charge: the token's call goes back before the caller hears of it.
        http_status = _FAILURE_STATUS.get(error.kind, status.HTTP_502_BAD_GATEWAY)
        with transaction.atomic():
            call = payment_services.tool_call_finish(
                call=call, outcome=_FAILURE_OUTCOME.get(error.kind, ToolCall.Outcome.UPSTREAM_ERROR),
                http_status=http_status, latency_ms=error.latency_ms or round((time.monotonic() - started) * 1000),
                amount_cents=0, upstream_code=error.code, upstream_request_id=error.request_id, error=error.message,
            )
            # A call reconciled meanwhile has had its payment given back already.
            if call.outcome != ToolCall.Outcome.ABANDONED:
                payment_services.token_call_give_back(payment=payment)
        body = {"error": _failure_message(error), "charged": False}
        if error.code:
            body["code"] = error.code
        if error.request_id:
            body["upstreamRequestId"] = error.request_id
        headers = {"Retry-After": "1"} if error.kind == "throttled" else {}
        return ToolAnswer(http_status, body, headers, call)
    payment_services.tool_call_finish(
        call=call, outcome=ToolCall.Outcome.SUCCEEDED, http_status=status.HTTP_200_OK,
        latency_ms=answer.latency_ms, amount_cents=payment.amount_cents // payment.max_calls,
        upstream_request_id=answer.request_id,
    )
    body = envelope(service.upstream_action, answer.body, answer.request_id)
    remaining = payment.max_calls - payment.used_calls
    return ToolAnswer(status.HTTP_200_OK, body, {"X-Payment-Remaining-Calls": str(remaining)}, call)


def paid_call_run(*, reference: str, arguments, api_key: str | None = None, payment_token: str | None = None,
                  payment_signature: str | None = None) -> ToolAnswer:
    """Run one paid tool call end to end and say how it ended; never raises for a refusal.

    `arguments` is the parsed JSON body (anything: it is validated here);
    `api_key`, `payment_token` and `payment_signature` are the raw credentials.
    """
    try:
        service = _resolve(reference)
        key = _authorize(service, api_key)
        _validate(service, arguments)
        payment, call = _pay(service, key, payment_token, payment_signature)
    except _Refused as refused:
        return refused.answer
    return _settle(service, payment, call, arguments)

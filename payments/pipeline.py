"""The paid call: the one pipeline behind `POST /api/tools/<id>`, the MCP endpoint and the job worker.

In SPEC's order, every refusal before anything is charged:
resolve -> API key -> input -> payment -> upstream -> settle -> record.
It returns a ToolAnswer (status, JSON body, headers) that each caller renders
in its own protocol; it never raises for a refusal.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework import status
from x402.http.utils import encode_payment_response_header
from x402.schemas import PaymentPayload, PaymentRequirements, SettleResponse

from catalog import aliyun_client
from catalog.aliyun_metadata import action_writes
from catalog.envelope import envelope
from catalog.input_validation import input_problems
from catalog.models import PricingPolicy, Service
from catalog.selectors import closest_service_ids, service_lookup
from health import services as health_services
from jobs import selectors as job_selectors
from jobs import services as job_services
from jobs.models import Job
from payments import challenge, credentials, facilitators, payment_signatures, rate_limits, x402_gateway
from payments import services as payment_services
from payments.models import ApiKey, Payment, ToolCall, X402Authorization
from payments.selectors import ApiKeyRejected, api_key_allows, api_key_authenticate
from server402 import database_outages

logger = logging.getLogger(__name__)

API_KEY_REQUIRED = "api key required"
API_KEY_NOT_ALLOWED = "api key is not allowed to call this service"


@dataclass
class ToolAnswer:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    call: ToolCall | None = None
    # The x402 settlement behind a PAYMENT-RESPONSE header, for callers (MCP) that carry it elsewhere.
    settlement: SettleResponse | None = None


class _Refused(Exception):
    def __init__(self, status_code: int, body: dict, headers: dict | None = None):
        super().__init__(body.get("error"))
        self.answer = ToolAnswer(status_code, body, headers or {})


def _resolve(reference: str, service: Service | None) -> Service:
    service = service or service_lookup(reference)
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


def _payment_required(service: Service, reason: str, code: str = "", headers: dict | None = None) -> _Refused:
    # Built once: the body and the PAYMENT-REQUIRED header carry the same requirements.
    required = challenge.x402_payment_required(service, reason)
    body = challenge.payment_required_body(service, required)
    if code:
        body["invalidReason"] = code
    return _Refused(status.HTTP_402_PAYMENT_REQUIRED, body,
                    {**challenge.payment_required_headers(required), **(headers or {})})


@dataclass
class _Purchase:
    payment: Payment
    call: ToolCall
    x402: x402_gateway.X402Settlement | None = None
    # A job's: run first inside each transaction that ends the call, to make sure this worker still holds
    # the job (jobs.services.job_fence); a worker that lost it must not end the call or move its payment.
    fence: Callable[[], None] | None = None

    def fenced(self) -> None:
        if self.fence is not None:
            self.fence()


def _pay_x402(service: Service, api_key: ApiKey | None, header: str | None, document) -> _Purchase:
    def refuse(status_code: int, code: str, message: str) -> _Refused:
        # x402's MCP transport has no 400: a payload it cannot read is refused like one that does not pay.
        if status_code == status.HTTP_402_PAYMENT_REQUIRED or (status_code == status.HTTP_400_BAD_REQUEST
                                                               and document is not None):
            return _payment_required(service, message, code)
        headers = {"Retry-After": "5"} if status_code == status.HTTP_503_SERVICE_UNAVAILABLE else {}
        return _Refused(status_code, {"error": message, "invalidReason": code, "charged": False}, headers)

    payload, offered, authorization = x402_gateway.x402_authorization_verify(
        header=header, document=document, requirements=challenge.x402_requirements(service),
        resource_url=challenge.tool_url(service), refuse=refuse)
    with transaction.atomic():
        try:
            payment, ledger = payment_services.x402_call_reserve(
                service=service, api_key=api_key, authorization=authorization, requirements=offered,
                facilitator=facilitators.facilitator().name)
        except payment_services.PaymentRefused as refused:
            raise _payment_required(service, refused.reason, refused.code) from None
        call = payment_services.tool_call_start(service=service, api_key=api_key, payment=payment,
                                                payment_method=ToolCall.PaymentMethod.X402)
    return _Purchase(payment, call, x402_gateway.X402Settlement(payload, offered, ledger))


def _pay(service: Service, api_key: ApiKey | None, payment_token: str | None,
         payment_signature: str | None, payment_payload) -> _Purchase:
    """Reserve the payment for one call and open the call's record, in one transaction (SPEC step 4)."""
    if payment_signature:
        return _pay_x402(service, api_key, payment_signature, None)
    if payment_payload is not None:
        return _pay_x402(service, api_key, None, payment_payload)
    if not payment_token:
        raise _payment_required(service, challenge.PAYMENT_REQUIRED)
    with transaction.atomic():
        try:
            payment = payment_services.token_call_reserve(token=payment_token, service=service, api_key=api_key)
        except payment_services.PaymentRefused as refused:
            raise _payment_required(service, refused.reason) from None
        call = payment_services.tool_call_start(service=service, api_key=api_key, payment=payment,
                                                payment_method=ToolCall.PaymentMethod.TOKEN)
    return _Purchase(payment, call)


def _call_ended(purchase: _Purchase, end: Callable[[], ToolCall]) -> ToolCall:
    """`end()`, the transaction that ends the call once the upstream (or the facilitator) has answered,
    run once more on a fresh connection if the database connection was lost meanwhile.

    An upstream call lasts seconds, and Django checks a kept connection only when a request starts: a
    database restart or failover meanwhile must not turn a result already paid upstream (and perhaps by the
    payer) into a 500 and a call left in progress. A COMMIT cut off midway may have committed: the call's
    record then says it ended, and `end()` is not run twice (it would give a token call back twice).
    Raises database_outages.DatabaseUnavailable when the database stays out of reach.
    """
    def ended_already() -> ToolCall | None:
        purchase.call.refresh_from_db()
        return None if purchase.call.outcome == ToolCall.Outcome.IN_PROGRESS else purchase.call

    return database_outages.write_surviving_a_lost_connection(end, done=ended_already)


def _settlement_failed(service: Service, purchase: _Purchase, settlement: SettleResponse, started: float,
                       upstream_request_id: str = "") -> ToolAnswer:
    """402: the payment did not settle, so whatever the call produced is not handed out."""
    reason = settlement.error_reason or "settlement_failed"
    detail = f" ({settlement.error_message})" if settlement.error_message else ""

    def end() -> ToolCall:
        with transaction.atomic():
            purchase.fenced()
            call = payment_services.tool_call_finish(
                call=purchase.call, outcome=ToolCall.Outcome.SETTLEMENT_FAILED,
                http_status=status.HTTP_402_PAYMENT_REQUIRED, latency_ms=round((time.monotonic() - started) * 1000),
                amount_cents=0, upstream_request_id=upstream_request_id, error=f"settlement failed: {reason}{detail}",
            )
            # The call was not delivered: a payment later paid (or reconciled as settled) still owes it.
            if call.outcome != ToolCall.Outcome.ABANDONED:
                payment_services.token_call_give_back(payment=purchase.payment)
        return call

    call = _call_ended(purchase, end)
    refused = _payment_required(service, f"payment settlement failed: {reason}{detail}; the result is withheld "
                                         f"and nothing was charged unless paymentId {purchase.payment.id} says so",
                                reason, {"PAYMENT-RESPONSE": encode_payment_response_header(settlement)})
    refused.answer.body["paymentId"] = purchase.payment.id
    if purchase.x402 is not None and purchase.x402.ledger.status == X402Authorization.Status.UNKNOWN:
        # The facilitator did not say, or said something that proves nothing: the operator reconciles it.
        refused.answer.body["settlement"] = "unknown"
    refused.answer.call = call
    refused.answer.settlement = settlement
    return refused.answer


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
        # An async action's job names its own wait; its status may be worth a job (Prefer: respond-async).
        return error.message if error.code == aliyun_client.ASYNC_JOB_TIMEOUT else "the upstream did not answer in time"
    if error.kind == "unconfigured":
        return "this server has no upstream credentials configured"
    return f"the upstream failed: {error.message}"


def _upstream_failed(purchase: _Purchase, error: aliyun_client.UpstreamError, started: float,
                     settlement: SettleResponse | None) -> ToolAnswer:
    """No result, no charge: the payment's call goes back (or x402 stays unsettled) before the caller hears."""
    payment = purchase.payment
    http_status = _FAILURE_STATUS.get(error.kind, status.HTTP_502_BAD_GATEWAY)

    def end() -> ToolCall:
        with transaction.atomic():
            purchase.fenced()
            call = payment_services.tool_call_finish(
                call=purchase.call, outcome=_FAILURE_OUTCOME.get(error.kind, ToolCall.Outcome.UPSTREAM_ERROR),
                http_status=http_status, latency_ms=error.latency_ms or round((time.monotonic() - started) * 1000),
                amount_cents=0, upstream_code=error.code, upstream_request_id=error.request_id, error=error.message,
            )
            # A call reconciled meanwhile has had its payment given back already.
            if call.outcome != ToolCall.Outcome.ABANDONED:
                payment_services.token_call_give_back(payment=payment)
            if purchase.x402 and settlement is None:
                payment_services.x402_authorization_release(ledger=purchase.x402.ledger)
        return call

    call = _call_ended(purchase, end)
    body = {"error": _failure_message(error), "charged": False}
    headers = {"Retry-After": "1"} if error.kind == "throttled" else {}
    if settlement is not None:
        # Settled before the call (settle_first): the money moved, so the caller gets a
        # token worth the call it did not receive.
        body.update(charged=True, paymentId=payment.id, retryToken=credentials.payment_token(payment.id),
                    retry="the payment settled before the upstream failed: retry with X-Payment-Token set to "
                          "retryToken (one call)")
        headers["PAYMENT-RESPONSE"] = encode_payment_response_header(settlement)
    if error.code:
        body["code"] = error.code
    if error.request_id:
        body["upstreamRequestId"] = error.request_id
    return ToolAnswer(http_status, body, headers, call, settlement)


DATABASE_UNAVAILABLE = "the database is unavailable; nothing was charged, retry shortly"


def _database_unavailable(purchase: _Purchase | None,
                          unavailable: database_outages.DatabaseUnavailable | None = None) -> ToolAnswer:
    """503 when the database cannot be reached, saying what became of the caller's payment.

    Before the payment is taken (`purchase` None) nothing was charged. After
    it, the call stays in progress in the database until the reconcile task
    (payments.tasks) closes it and gives its token call back; an x402
    settlement that may have moved money is left for the operator as unknown.
    """
    headers = {"Retry-After": "5"}
    if purchase is None:
        return ToolAnswer(status.HTTP_503_SERVICE_UNAVAILABLE, {"error": DATABASE_UNAVAILABLE, "charged": False},
                          headers)
    payment_id = purchase.payment.id
    withheld = "the database became unavailable before this call could be recorded, so its result is withheld"
    if purchase.x402 is None:
        body = {"error": f"{withheld}; its token call is given back automatically within minutes: retry then",
                "charged": False, "paymentId": payment_id}
        return ToolAnswer(status.HTTP_503_SERVICE_UNAVAILABLE, body, headers)
    settlement = getattr(unavailable, "settlement", None)
    if settlement is None:
        owed = (f"nothing was charged unless paymentId {payment_id} says so, and then retryToken pays for the call "
                f"once it is given back (within minutes)")
    else:
        # Settled, but not recorded: the payment stays pending (its token refused) until an operator records it.
        owed = (f"the payment settled (PAYMENT-RESPONSE is the receipt) but could not be recorded: do not pay again; "
                f"keep paymentId {payment_id}, and retryToken pays for the call once the operator has recorded it")
    body = {"error": f"{withheld}; {owed}", "settlement": "unknown", "paymentId": payment_id,
            "retryToken": credentials.payment_token(payment_id)}
    if settlement is not None:
        # The facilitator's answer is the payer's only receipt: the database could not keep it.
        headers["PAYMENT-RESPONSE"] = encode_payment_response_header(settlement)
    return ToolAnswer(status.HTTP_503_SERVICE_UNAVAILABLE, body, headers)


def _run(service: Service, purchase: _Purchase, arguments: dict, *, upstream=None, before_settle=None) -> ToolAnswer:
    """Call the upstream for a reserved purchase; settle x402 before or after, as the payment's policy says.

    `upstream()` makes the call (by default call_service, waiting for an
    async action's job); `before_settle()` runs before each settlement and may
    raise to stop (a job's worker that lost its lease must not move money).
    """
    started = time.monotonic()
    payment, x402 = purchase.payment, purchase.x402
    settlement = None
    if x402 is not None and x402.ledger.status == X402Authorization.Status.SETTLED:
        # Settled by an earlier attempt of the same job (settle_first, or a worker that died after settling).
        settlement = x402_gateway.x402_recorded_settlement(x402)
    if x402 is not None and settlement is None and payment.settle_mode == PricingPolicy.SettleMode.SETTLE_FIRST:
        if before_settle is not None:
            before_settle()
        settlement = x402_gateway.x402_settle(x402, purchase.call.api_key)
        if not settlement.success:
            return _settlement_failed(service, purchase, settlement, started)
    try:
        answer = upstream() if upstream is not None else aliyun_client.call_service(service, arguments)
    except aliyun_client.UpstreamError as error:
        return _upstream_failed(purchase, error, started, settlement)
    if x402 is not None and settlement is None:
        if before_settle is not None:
            before_settle()
        settlement = x402_gateway.x402_settle(x402, purchase.call.api_key)
        if not settlement.success:
            return _settlement_failed(service, purchase, settlement, started, answer.request_id)

    def end() -> ToolCall:
        with transaction.atomic():
            purchase.fenced()
            return payment_services.tool_call_finish(
                call=purchase.call, outcome=ToolCall.Outcome.SUCCEEDED, http_status=status.HTTP_200_OK,
                latency_ms=answer.latency_ms, amount_cents=payment.amount_cents // payment.max_calls,
                upstream_request_id=answer.request_id,
            )

    call = _call_ended(purchase, end)
    body = envelope(service.upstream_action, answer.body, answer.request_id)
    headers = {"X-Payment-Remaining-Calls": str(payment.max_calls - payment.used_calls)}
    if settlement is not None:
        headers["PAYMENT-RESPONSE"] = encode_payment_response_header(settlement)
    return ToolAnswer(status.HTTP_200_OK, body, headers, call, settlement)


def _job_accepted(service: Service, key: ApiKey | None, purchase: _Purchase, arguments: dict) -> ToolAnswer:
    """202: the paid call is queued as a job; the answer says where and how to read its result."""
    x402 = purchase.x402
    created = job_services.job_create(
        service=service, api_key=key, call=purchase.call, arguments=arguments,
        x402_payload=x402.payload.model_dump(mode="json", by_alias=True, exclude_none=True) if x402 else None,
        x402_requirements=x402.requirements.model_dump(mode="json", by_alias=True, exclude_none=True)
        if x402 else None,
    )
    body = {**job_selectors.job_record(created.job), "jobSecret": created.secret}
    headers = {"Location": body["statusUrl"], "Retry-After": str(settings.JOB_RETRY_AFTER_SECONDS),
               "Preference-Applied": "respond-async"}
    if x402 is None:
        headers["X-Payment-Remaining-Calls"] = str(purchase.payment.max_calls - purchase.payment.used_calls)
    return ToolAnswer(status.HTTP_202_ACCEPTED, body, headers, purchase.call)


def _credential_parses(api_key: str | None, payment_token: str | None, payment_signature: str | None,
                       payment_payload) -> bool:
    """Whether any credential the request carries is well formed, judged without the database.

    One that does not even parse (a junk key, a token whose MAC is wrong, a PAYMENT-SIGNATURE that is not a
    PaymentPayload) can only be refused: carrying it must not lift a flood off the anonymous limit.
    """
    if api_key is not None and credentials.api_key_prefix(api_key):
        return True
    if payment_token and credentials.payment_token_id(payment_token):
        return True
    try:
        if payment_signature:
            payment_signatures.payment_payload_decode(payment_signature)
            return True
        if payment_payload is not None:
            payment_signatures.payment_payload_parse(payment_payload, source="x402/payment")
            return True
    except payment_signatures.PaymentSignatureRefused:
        pass
    return False


def _anonymous_limit(client_address: str | None) -> None:
    """429 once `client_address` has sent too many requests with neither an API key nor a payment this minute.

    Checked before anything else: such a request can only be refused or answered with the price, and a
    flood of them must cost no more than a counter in the cache (no lookup, no search for close ids).
    """
    wait = rate_limits.anonymous_hit(client_address) if client_address else None
    if wait is not None:
        raise _too_many(rate_limits.anonymous_limit_message(), wait)


def paid_call_run(*, reference: str, arguments, api_key: str | None = None, payment_token: str | None = None,
                  payment_signature: str | None = None, payment_payload=None,
                  service: Service | None = None, respond_async: bool = False,
                  client_address: str | None = None) -> ToolAnswer:
    """Run one paid tool call end to end and say how it ended; never raises for a refusal.

    `arguments` is the parsed JSON body (anything: it is validated here), or
    None when there was no body: an unpaid request without one is a price
    enquiry and gets the 402 (as `curl -X POST <tool>` in the payment
    instructions, and discovery services that probe each listed resource, expect);
    `api_key`, `payment_token` and `payment_signature` (the PAYMENT-SIGNATURE
    header) are the raw credentials; `payment_payload` is an x402 PaymentPayload
    already decoded from JSON (MCP's `_meta["x402/payment"]`). An x402 payment
    is used before a token. A caller that has read the service row already
    (MCP, to tell an unknown tool apart) passes it as `service`.

    `respond_async` (HTTP `Prefer: respond-async`) makes the same checks and
    takes the same payment, then answers 202 with a job that a worker runs
    through paid_job_run, settling an x402 payment there as the policy says.

    `client_address` (server402.client_addresses) is where an HTTP or MCP
    request came from: one with neither an API key nor a payment (or with only
    credentials that do not parse) counts against ANONYMOUS_RATE_LIMIT_PER_MINUTE
    for that address.
    """
    try:
        if not _credential_parses(api_key, payment_token, payment_signature, payment_payload):
            _anonymous_limit(client_address)
        service = _resolve(reference, service)
        key = _authorize(service, api_key)
        if arguments is None and not (payment_token or payment_signature or payment_payload is not None):
            raise _payment_required(service, challenge.PAYMENT_REQUIRED)
        # Paid, a missing body is an empty one: valid for a tool without required parameters.
        arguments = {} if arguments is None else arguments
        _validate(service, arguments)
        purchase = _pay(service, key, payment_token, payment_signature, payment_payload)
    except _Refused as refused:
        if refused.answer.status == status.HTTP_402_PAYMENT_REQUIRED:
            health_services.challenge_stats_record(service=service)
        return refused.answer
    except database_outages.CONNECTION_ERRORS:
        # Lost before the payment's transaction committed: nothing was taken. (Lost during its COMMIT, it may
        # have committed; the call it opened is then given back by the reconcile task.)
        if not database_outages.connection_dropped():
            raise
        return _database_unavailable(None)
    if respond_async:
        return _job_accepted(service, key, purchase, arguments)
    try:
        answer = _run(service, purchase, arguments)
    except database_outages.DatabaseUnavailable as unavailable:
        return _database_unavailable(purchase, unavailable)
    if answer.call is not None:
        health_services.tool_call_stats_record(call=answer.call)
    return answer


def _job_purchase(job: Job) -> _Purchase:
    """The purchase a job was accepted with, rebuilt from its rows (the worker is another process)."""
    call = job.call
    x402 = None
    if job.x402_payload is not None:
        ledger = X402Authorization.objects.filter(payment_id=call.payment_id).order_by("-created_at").first()
        x402 = x402_gateway.X402Settlement(PaymentPayload.model_validate(job.x402_payload),
                                           PaymentRequirements.model_validate(job.x402_requirements), ledger)
    return _Purchase(call.payment, call, x402)


def _unsettled_authorization_expiry(purchase: _Purchase):
    """When an x402 authorization still to be settled stops being settleable (settling takes its time), or None."""
    ledger = purchase.x402.ledger if purchase.x402 else None
    if ledger is None or ledger.status != X402Authorization.Status.RESERVED:
        return None
    return ledger.valid_before - timedelta(seconds=settings.X402_FACILITATOR_TIMEOUT)


def _job_refusal(job: Job, purchase: _Purchase) -> tuple[int, str, str] | None:
    """Why a claimed job must not call the upstream (again): (status, reason, call outcome), or None."""
    now = timezone.now()
    if now >= job_services.job_deadline(job):
        return (status.HTTP_504_GATEWAY_TIMEOUT, f"the job did not finish within {settings.JOB_TIMEOUT_SECONDS} s "
                f"of its submission", ToolCall.Outcome.TIMEOUT)
    expiry = _unsettled_authorization_expiry(purchase)
    if expiry is not None and now >= expiry:
        # A result could no longer be paid for: the upstream is not called for nothing.
        return (status.HTTP_504_GATEWAY_TIMEOUT, "the x402 authorization expired (validBefore) before a worker could "
                "make the call; submit again with a new payment", ToolCall.Outcome.TIMEOUT)
    if job.api_key is not None and job.api_key.revoked_at is not None:
        # A job is authorized again whenever a worker starts it: revoking a key stops the work it queued, as it
        # stops its next call. A call already under way when the key was revoked finishes, like a synchronous one.
        return (status.HTTP_401_UNAUTHORIZED, "the api key this job was submitted with was revoked before a worker "
                "made the call", ToolCall.Outcome.ABANDONED)
    service = job.service
    if service.state != Service.State.PUBLISHED or not service.enabled:
        return (status.HTTP_503_SERVICE_UNAVAILABLE, f"service {service.id!r} was disabled or unpublished by the "
                "operator before the job ran", ToolCall.Outcome.ABANDONED)
    if job.upstream_sent_at and not job.upstream_job_id and action_writes(service.upstream_action):
        # It changes data upstream (a face added to a database...): sent once may have run once, so it is not
        # sent again, as a synchronous POST that timed out is not.
        return (status.HTTP_502_BAD_GATEWAY, "the worker making this call stopped after sending it; it changes "
                "data upstream, so it is not repeated", ToolCall.Outcome.ABANDONED)
    if purchase.call.outcome not in (ToolCall.Outcome.IN_PROGRESS, ToolCall.Outcome.SUCCEEDED):
        return (purchase.call.http_status or status.HTTP_502_BAD_GATEWAY, "an earlier attempt of this job failed",
                purchase.call.outcome)
    ledger = purchase.x402.ledger if purchase.x402 else None
    if ledger is not None and (ledger.status not in (X402Authorization.Status.RESERVED,
                                                     X402Authorization.Status.SETTLED)
                               or ledger.status == X402Authorization.Status.RESERVED and job.settling_started_at):
        return (status.HTTP_502_BAD_GATEWAY, "an earlier attempt of this job was cut off while settling its payment",
                ToolCall.Outcome.ABANDONED)
    return None


def paid_job_run(*, job_id: str) -> Job | None:
    """Make the call of a queued job, as paid_call_run would have, and keep its answer on the job.

    The Celery worker's side of `respond_async`. Returns the ended job, or
    None when it was not this worker's to run (taken, finished, or its lease
    lost midway to the reaper, which then answers for it).
    """
    job = job_services.job_claim(job_id=job_id)
    if job is None:
        return None
    service, purchase = job.service, _job_purchase(job)
    purchase.fence = lambda: job_services.job_fence(job=job)
    refusal = _job_refusal(job, purchase)
    if refusal is not None:
        http_status, reason, outcome = refusal
        return job_services.job_fail(job=job, reason=reason, http_status=http_status, outcome=outcome)
    # An upstream job is waited for until the job's deadline, or until its x402 authorization could no longer
    # be settled, whichever comes first.
    deadline = min(filter(None, (job_services.job_deadline(job), _unsettled_authorization_expiry(purchase))))
    wait_seconds = max(0.0, (deadline - timezone.now()).total_seconds())

    def progress(upstream_job_id: str, upstream_status: str) -> None:
        job_services.job_lease_renew(job=job, upstream_job_id=upstream_job_id, upstream_status=upstream_status)

    def upstream():
        job_services.job_upstream_sending(job=job)
        return aliyun_client.call_service(service, job.arguments, wait_seconds=wait_seconds, progress=progress,
                                          resume_job_id=job.upstream_job_id)

    try:
        answer = _run(service, purchase, job.arguments, upstream=upstream,
                      before_settle=lambda: job_services.job_settling(job=job))
        if answer.call is not None:
            health_services.tool_call_stats_record(call=answer.call)
        return job_services.job_finish(job=job, http_status=answer.status, body=answer.body,
                                       receipt=answer.headers.get("PAYMENT-RESPONSE", ""))
    except job_services.JobLeaseLost:
        logger.warning("job %s: this worker's lease ran out; the reaper has it now", job_id)
        return None

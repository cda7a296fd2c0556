"""The paid call and the legacy payments API: parse, call one service, render."""

import json
import re

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView
from x402.http.utils import encode_payment_response_header

from catalog import openapi
from catalog.selectors import closest_service_ids, service_resolve
from payments import challenge, rate_limits, x402_gateway
from payments import services as payment_services
from payments.api.authentication import request_api_key
from payments.api.serializers import PaymentCreateSerializer, PaymentPaySerializer
from payments.models import ApiKey, Payment
from payments.pipeline import API_KEY_NOT_ALLOWED, paid_call_run
from payments.selectors import api_key_allows, api_key_presented, payment_record, payment_visible
from server402.api_errors import ApiError
from server402.client_addresses import client_address
from server402.http_preferences import prefers_respond_async
from server402.request_bodies import BodyRefused, bounded_body

# What credentials.payment_id_generate() makes.
_PAYMENT_ID = re.compile(r"pay_[0-9a-f]{32}")
_PAYMENT_ID_PARAMETER = OpenApiParameter("payment_id", str, OpenApiParameter.PATH,
                                         pattern=f"^{_PAYMENT_ID.pattern}$",
                                         description="The paymentId of POST /api/payments.")


def _json_body(request):
    """The request body as JSON, refusing oversized and malformed bodies with a sentence."""
    try:
        raw = bounded_body(request, settings.TOOL_CALL_MAX_BODY_BYTES)
    except BodyRefused as refused:
        raise ApiError(refused.message) from None
    if not raw.strip():
        return None  # no body at all: an unpaid one is a price enquiry (see paid_call_run)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("request body must be a JSON object") from None


def _response(answer) -> Response:
    return Response(answer.body, status=answer.status, headers=answer.headers)


class ToolCallApi(APIView):
    """POST /api/tools/<serviceId>: one paid call (see payments.pipeline)."""

    parser_classes: list = []

    # The template of every tool's operation: catalog.openapi lists one path per published tool.
    @extend_schema(
        request={"application/json": {"type": "object"}},
        parameters=[
            openapi.PAYMENT_SIGNATURE, openapi.PAYMENT_TOKEN, openapi.PREFER,
            openapi.response_header("X-Payment-Remaining-Calls", codes=[200], required=True),
            openapi.response_header("Location", codes=[202], required=True),
            openapi.response_header("Retry-After", codes=[202], required=True),
            openapi.response_header("Preference-Applied", codes=[202], required=True),
            openapi.response_header("PAYMENT-RESPONSE", codes=[200, 400, 402, 502, 503, 504]),
            openapi.response_header("PAYMENT-REQUIRED", codes=[402], required=True),
            openapi.response_header("X-Payment-Required", codes=[402], required=True),
            openapi.response_header("Retry-After", codes=[429], required=True),
            openapi.response_header("Retry-After", codes=[503]),
        ],
        responses={
            200: OpenApiResponse(openapi.schema_ref("ToolResult"),
                                 description="The tool's result; PAYMENT-RESPONSE is the x402 receipt."),
            202: OpenApiResponse(openapi.schema_ref("JobAccepted"),
                                 description="With `Prefer: respond-async`: paid for and queued as a job; read it "
                                             "at Location (statusUrl). A worker settles it as the pricing policy says; "
                                             "a job that fails is not charged (or carries a retryToken)."),
            400: openapi.error("The arguments do not fit the input schema (the sentence names the parameter), the "
                               "body is not a JSON object or is too large, PAYMENT-SIGNATURE cannot be read, or "
                               "the upstream refused the input (its code in `code`). Nothing is charged unless "
                               "`charged` says so (then retryToken pays the retry)."),
            401: openapi.error("The API key is unknown or revoked, or this tool requires one."),
            402: openapi.payment_required("Payment required, or the payment sent was refused (the reason in error "
                                          "and invalidReason). The body and PAYMENT-REQUIRED say how to pay."),
            403: openapi.error("The API key is not allowed to call this tool."),
            404: openapi.error("The tool is not published (any more)."),
            429: openapi.error("The API key's rate limit or daily quota is used up: wait Retry-After seconds."),
            502: openapi.error("The upstream failed, or refused this server's credentials. Nothing is charged "
                               "unless `charged` says so (then retryToken pays the retry)."),
            503: openapi.error("The tool is disabled by the operator, the upstream is throttling, the x402 "
                               "facilitator did not answer, no upstream credentials are configured, or the "
                               "database is unavailable (a token call taken is given back within minutes; "
                               "`settlement` says when an x402 payment's outcome is unknown)."),
            504: openapi.error("The upstream did not answer in time. Nothing is charged unless `charged` says so."),
        },
        extensions={openapi.TOOL_TEMPLATE: True},
    )
    def post(self, request, service_id):
        answer = paid_call_run(
            reference=service_id,
            arguments=_json_body(request),
            api_key=api_key_presented(request.headers),
            payment_token=request.headers.get("X-Payment-Token") or None,
            payment_signature=request.headers.get("PAYMENT-SIGNATURE") or None,
            respond_async=prefers_respond_async(request.headers.get("Prefer")),
            client_address=client_address(request),
        )
        return _response(answer)


def _payment(payment_id: str, viewer: ApiKey | None) -> Payment:
    """The payment `viewer` may see; another client's is "not found", word for word as an unknown id."""
    payment = None
    # Checked before the query: an id PostgreSQL cannot even store (a NUL byte) is simply not found.
    if _PAYMENT_ID.fullmatch(payment_id):
        payment = payment_visible(payment_id, viewer=viewer)
    if payment is None:
        raise ApiError("payment not found", status_code=status.HTTP_404_NOT_FOUND)
    return payment


class PaymentCreateApi(APIView):
    """POST /api/payments {serviceId, providerId?}: a pending payment with its token."""

    @extend_schema(
        operation_id="create_payment", summary="Create a payment (legacy token flow)", tags=["payments"],
        description="A pending payment for calls of one tool, with its token: pay it (POST .../pay), then send "
                    "the token as X-Payment-Token. The price is copied from the tool's pricing policy.",
        request={"application/json": openapi.schema_ref("PaymentCreateRequest")}, auth=openapi.API_KEY_OPTIONAL,
        responses={201: OpenApiResponse(openapi.schema_ref("PaymentRecord"), description="The pending payment."),
                   400: openapi.error("The body is not a JSON object, has unknown fields, or a field is wrong."),
                   401: openapi.error("The API key is unknown or revoked, or the tool's policy requires one."),
                   403: openapi.error("The API key is not allowed to call this tool."),
                   404: openapi.error("No published tool has this serviceId; closestIds suggests some."),
                   429: openapi.error("Too many payments created without an API key from this address this "
                                      "minute: wait Retry-After seconds.")},
    )
    def post(self, request):
        if api_key_presented(request.headers) is None:
            # Each anonymous payment is a row: their number is bounded per address, before any other work.
            wait = rate_limits.anonymous_hit(client_address(request))
            if wait is not None:
                raise ApiError(rate_limits.anonymous_limit_message(), status_code=status.HTTP_429_TOO_MANY_REQUESTS,
                               headers={"Retry-After": str(wait)}, retryAfterSeconds=wait)
        if not isinstance(request.data, dict):
            raise ApiError("request body must be a JSON object")
        serializer = PaymentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reference = serializer.validated_data["serviceId"]
        service = service_resolve(reference)
        if service is None:
            raise ApiError(f"service {reference!r} not found", status_code=status.HTTP_404_NOT_FOUND,
                           closestIds=closest_service_ids(reference))
        provider_id = serializer.validated_data.get("providerId")
        if provider_id and provider_id != service.payment_provider_id:
            raise ApiError(f"providerId must be {service.payment_provider_id!r} for this service",
                           field="providerId")
        api_key = request_api_key(request, required=service.pricing_policy.require_api_key)
        if api_key is not None and not api_key_allows(api_key, service):
            raise ApiError(API_KEY_NOT_ALLOWED, status_code=status.HTTP_403_FORBIDDEN)
        payment = payment_services.payment_create(service=service, client=api_key, provider_id=provider_id)
        return Response(payment_record(payment, viewer=api_key, show_token=True), status=status.HTTP_201_CREATED)


class PaymentDetailApi(APIView):
    """GET /api/payments/<paymentId>: status and remaining calls; the token only for its client."""

    @extend_schema(
        operation_id="get_payment", summary="Verify a payment", tags=["payments"],
        parameters=[_PAYMENT_ID_PARAMETER], auth=openapi.API_KEY_OPTIONAL,
        responses={200: OpenApiResponse(openapi.schema_ref("PaymentRecord"),
                                        description="Its status and remaining calls; the token for its client."),
                   401: openapi.error("The API key is unknown or revoked."),
                   404: openapi.error("No such payment, or it is bound to another client than the API key "
                                      "sent (or none was sent): the two answers are the same.")},
    )
    def get(self, request, payment_id):
        viewer = request_api_key(request, required=False)
        return Response(payment_record(_payment(payment_id, viewer), viewer=viewer))


def _x402_refusal(payment: Payment, refused: x402_gateway.X402PaymentRefused, viewer: ApiKey | None) -> Response:
    if refused.status != status.HTTP_402_PAYMENT_REQUIRED:
        headers = {"Retry-After": "5"} if refused.status == status.HTTP_503_SERVICE_UNAVAILABLE else {}
        return Response({"error": refused.message, "invalidReason": refused.code, "charged": False},
                        status=refused.status, headers=headers)
    required = challenge.payment_x402_payment_required(payment, refused.message)
    body = {"type": "payment_required", "error": refused.message, "payment": payment_record(payment, viewer=viewer),
            **challenge.x402_wire(required)}
    if refused.code:
        body["invalidReason"] = refused.code
    headers = challenge.payment_required_headers(required)
    if refused.settlement is not None:
        headers["PAYMENT-RESPONSE"] = encode_payment_response_header(refused.settlement)
    return Response(body, status=status.HTTP_402_PAYMENT_REQUIRED, headers=headers)


class PaymentPayApi(APIView):
    """POST /api/payments/<paymentId>/pay: pay a pending payment.

    `{"method": "balance"}` pays from the caller's prepaid balance (API key
    required). `{"method": "x402"}` (the default when PAYMENT-SIGNATURE is
    sent) pays with x402: without the header the answer is a 402 with the
    payment's requirements, so any x402 client completes it on its own.
    """

    @extend_schema(
        operation_id="pay_payment", summary="Pay a payment", tags=["payments"],
        description="`{\"method\": \"balance\"}` pays from the API key's prepaid balance; `{\"method\": \"x402\"}` "
                    "(the default with PAYMENT-SIGNATURE) pays with x402: without the header the answer is a 402 "
                    "with the payment's requirements (its whole price), so any x402 client completes it.",
        request={"application/json": openapi.schema_ref("PaymentPayRequest")}, auth=openapi.API_KEY_OPTIONAL,
        parameters=[
            _PAYMENT_ID_PARAMETER, openapi.PAYMENT_SIGNATURE,
            openapi.response_header("PAYMENT-RESPONSE", codes=[200, 402]),
            openapi.response_header("PAYMENT-REQUIRED", codes=[402]),
            openapi.response_header("X-Payment-Required", codes=[402]),
            openapi.response_header("Retry-After", codes=[503]),
        ],
        responses={
            200: OpenApiResponse(openapi.schema_ref("PaymentRecord"),
                                 description="Paid; PAYMENT-RESPONSE is the x402 receipt."),
            400: openapi.error("method is unknown, or PAYMENT-SIGNATURE cannot be read."),
            401: openapi.error("The API key is unknown or revoked, or paying from a balance without one."),
            402: OpenApiResponse(
                {"anyOf": [openapi.schema_ref("PaymentRequired"), openapi.schema_ref("Error")]},
                description="x402: the payment's requirements, or why the payment sent was refused; "
                            "balance: the balance is too low (balanceCents)."),
            404: openapi.error("No such payment, or it is bound to another client than the API key sent."),
            409: openapi.error("The payment cannot be paid: already paid, or expired."),
            503: openapi.error("The x402 facilitator did not answer (nothing was charged), or the database could not "
                               "record its settlement (`settlement` is unknown; PAYMENT-RESPONSE is the receipt)."),
        },
    )
    def post(self, request, payment_id):
        signature = request.headers.get("PAYMENT-SIGNATURE") or None
        data = request.data if isinstance(request.data, dict) else {}
        serializer = PaymentPaySerializer(data={"method": "x402" if signature else "balance", **data})
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data["method"] == "x402":
            return self._pay_with_x402(request, payment_id, signature)
        api_key = request_api_key(request, required=True)
        payment = _payment(payment_id, api_key)
        try:
            payment = payment_services.payment_pay_from_balance(payment=payment, api_key=api_key)
        except payment_services.InsufficientBalance:
            raise ApiError(
                f"api key balance is too low: {api_key.balance_cents} cents, {payment.amount_cents} needed",
                status_code=status.HTTP_402_PAYMENT_REQUIRED, balanceCents=api_key.balance_cents,
            ) from None
        except payment_services.PaymentRefused as refused:
            raise ApiError(refused.reason, status_code=status.HTTP_409_CONFLICT) from None
        return Response(payment_record(payment, viewer=api_key))

    def _pay_with_x402(self, request, payment_id, signature):
        api_key = request_api_key(request, required=False)
        payment = _payment(payment_id, api_key)
        try:
            settlement = x402_gateway.payment_pay_with_x402(payment=payment, api_key=api_key, header=signature)
        except x402_gateway.X402PaymentRefused as refused:
            payment.refresh_from_db()
            return _x402_refusal(payment, refused, api_key)
        except x402_gateway.SettlementUnrecorded as unrecorded:
            # The facilitator answered and the database could not keep it: its answer is the payer's only receipt.
            headers = {"Retry-After": "5"}
            if unrecorded.settlement is not None:
                headers["PAYMENT-RESPONSE"] = encode_payment_response_header(unrecorded.settlement)
            body = {"error": f"the database became unavailable while recording this payment's x402 settlement: "
                             f"whether payment {payment.id} is paid is unknown until the operator reconciles it; "
                             f"do not pay it again", "settlement": "unknown", "paymentId": payment.id}
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)
        except payment_services.PaymentRefused as refused:
            raise ApiError(refused.reason, status_code=status.HTTP_409_CONFLICT) from None
        # Whoever paid an unbound payment holds its calls; a bound one shows its token to its client only.
        record = payment_record(payment, viewer=api_key, show_token=payment.client_id is None)
        return Response(record, headers={"PAYMENT-RESPONSE": encode_payment_response_header(settlement)})

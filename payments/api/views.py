"""The paid call and the legacy payments API: parse, call one service, render."""

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView
from x402.http.utils import encode_payment_response_header

from catalog.selectors import closest_service_ids, service_resolve
from payments import challenge, x402_gateway
from payments import services as payment_services
from payments.api.serializers import PaymentCreateSerializer, PaymentPaySerializer
from payments.models import ApiKey, Payment
from payments.pipeline import API_KEY_NOT_ALLOWED, API_KEY_REQUIRED, paid_call_run
from payments.selectors import (
    ApiKeyRejected,
    api_key_allows,
    api_key_authenticate,
    api_key_presented,
    payment_record,
)
from server402.api_errors import ApiError

_PAYMENT_ID_LENGTH = 36


def _json_body(request):
    """The request body as JSON, refusing oversized and malformed bodies with a sentence."""
    limit = settings.TOOL_CALL_MAX_BODY_BYTES
    too_large = ApiError(f"request body is too large: at most {limit} bytes")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError("Content-Length is not a number") from None
    if declared > limit:
        raise too_large
    try:
        raw = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
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

    def post(self, request, service_id):
        answer = paid_call_run(
            reference=service_id,
            arguments=_json_body(request),
            api_key=api_key_presented(request.headers),
            payment_token=request.headers.get("X-Payment-Token") or None,
            payment_signature=request.headers.get("PAYMENT-SIGNATURE") or None,
        )
        return _response(answer)


def _api_key(request, *, required: bool) -> ApiKey | None:
    presented = api_key_presented(request.headers)
    if presented is None:
        if required:
            raise ApiError(API_KEY_REQUIRED, status_code=status.HTTP_401_UNAUTHORIZED)
        return None
    try:
        return api_key_authenticate(presented)
    except ApiKeyRejected as rejected:
        raise ApiError(rejected.reason, status_code=status.HTTP_401_UNAUTHORIZED) from None


def _payment(payment_id: str) -> Payment:
    payment = None
    if payment_id.startswith("pay_") and len(payment_id) == _PAYMENT_ID_LENGTH:
        payment = Payment.objects.select_related("service", "client").filter(pk=payment_id).first()
    if payment is None:
        raise ApiError("payment not found", status_code=status.HTTP_404_NOT_FOUND)
    return payment


class PaymentCreateApi(APIView):
    """POST /api/payments {serviceId, providerId?}: a pending payment with its token."""

    def post(self, request):
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
        api_key = _api_key(request, required=service.pricing_policy.require_api_key)
        if api_key is not None and not api_key_allows(api_key, service):
            raise ApiError(API_KEY_NOT_ALLOWED, status_code=status.HTTP_403_FORBIDDEN)
        payment = payment_services.payment_create(service=service, client=api_key, provider_id=provider_id)
        return Response(payment_record(payment, viewer=api_key, show_token=True), status=status.HTTP_201_CREATED)


class PaymentDetailApi(APIView):
    """GET /api/payments/<paymentId>: status and remaining calls; the token only for its client."""

    def get(self, request, payment_id):
        payment = _payment(payment_id)
        return Response(payment_record(payment, viewer=_api_key(request, required=False)))


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

    def post(self, request, payment_id):
        signature = request.headers.get("PAYMENT-SIGNATURE") or None
        data = request.data if isinstance(request.data, dict) else {}
        serializer = PaymentPaySerializer(data={"method": "x402" if signature else "balance", **data})
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data["method"] == "x402":
            return self._pay_with_x402(request, payment_id, signature)
        api_key = _api_key(request, required=True)
        payment = _payment(payment_id)
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
        api_key = _api_key(request, required=False)
        payment = _payment(payment_id)
        try:
            settlement = x402_gateway.payment_pay_with_x402(payment=payment, api_key=api_key, header=signature)
        except x402_gateway.X402PaymentRefused as refused:
            payment.refresh_from_db()
            return _x402_refusal(payment, refused, api_key)
        except payment_services.PaymentRefused as refused:
            raise ApiError(refused.reason, status_code=status.HTTP_409_CONFLICT) from None
        # Whoever paid an unbound payment holds its calls; a bound one shows its token to its client only.
        record = payment_record(payment, viewer=api_key, show_token=payment.client_id is None)
        return Response(record, headers={"PAYMENT-RESPONSE": encode_payment_response_header(settlement)})

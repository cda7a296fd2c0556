"""The 402 answer: what a call costs and how to pay for it (seed 001's payment_required body).

Built from the service and settings only: answering 402 writes nothing, so an
anonymous caller cannot make Server402 store rows by asking for prices.
"""

from django.conf import settings

from catalog.models import Service
from payments.instructions import payment_flow

PAYMENT_REQUIRED = "payment required"


def payment_quote(service: Service) -> dict:
    """The price of one purchase of `service`, in the payment record's field names (no id: nothing is stored)."""
    policy = service.pricing_policy
    return {
        "status": "required",
        "serviceId": service.id,
        "internalServiceId": service.internal_id,
        "amountCents": policy.amount_cents,
        "currency": policy.currency,
        "billingMode": policy.billing_mode,
        "maxCalls": policy.max_calls,
        "payTo": settings.X402_PAY_TO,
        "provider": service.payment_provider,
        "providerId": service.payment_provider_id,
    }


def tool_url(service: Service) -> str:
    return f"{settings.PUBLIC_BASE_URL}/api/tools/{service.id}"


def payment_required_body(service: Service, reason: str = PAYMENT_REQUIRED) -> dict:
    """Seed 001's 402 body; `error` is the precise reason the call was not paid for."""
    flow = payment_flow()
    return {
        "type": "payment_required",
        "error": reason,
        "payment": payment_quote(service),
        "paymentFlow": flow,
        "retry": flow["retry"],
        # x402 requirements are added by the x402 payment issue; until then only the token flow pays.
        "accepts": [],
        "resource": {"url": tool_url(service), "description": service.name, "mimeType": "application/json"},
        "extensions": {},
        "x402Version": 2,
    }


def payment_required_headers() -> dict:
    return {"X-Payment-Required": "true"}

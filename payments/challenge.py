"""The 402 answer: what a call costs and how to pay for it (seed 001's payment_required body).

Built from the service and settings only: answering 402 writes nothing, so an
anonymous caller cannot make Server402 store rows by asking for prices.
"""

import math

from django.conf import settings
from x402.http.utils import encode_payment_required_header
from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo

from catalog.models import Service
from payments.instructions import payment_flow

# USDC has 6 decimals: one US cent is 10,000 atomic units.
USDC_UNITS_PER_CENT = 10_000

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


def x402_requirements(service: Service) -> list[PaymentRequirements]:
    """What one call costs in x402 terms (scheme exact, USDC on Base), or [] if the price is not in USD.

    A policy that sells N calls for one price costs 1/N of it per x402 call,
    rounded up to the next atomic unit.
    """
    policy = service.pricing_policy
    if policy.currency != "USD":
        return []
    amount = math.ceil(policy.amount_cents * USDC_UNITS_PER_CENT / policy.max_calls)
    return [PaymentRequirements(
        scheme="exact",
        network=settings.X402_NETWORK,
        asset=settings.X402_ASSET,
        amount=str(amount),
        pay_to=settings.X402_PAY_TO,
        max_timeout_seconds=settings.X402_MAX_TIMEOUT_SECONDS,
        extra=dict(settings.X402_ASSET_DOMAIN),
    )]


def x402_payment_required(service: Service, reason: str = PAYMENT_REQUIRED) -> PaymentRequired:
    """The x402 v2 PaymentRequired of a tool call, built with the official SDK's types."""
    return PaymentRequired(
        error=reason,
        resource=ResourceInfo(url=tool_url(service), description=service.name, mime_type="application/json"),
        accepts=x402_requirements(service),
    )


def _wire(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def payment_required_body(service: Service, reason: str = PAYMENT_REQUIRED) -> dict:
    """Seed 001's 402 body; `error` is the precise reason the call was not paid for."""
    flow = payment_flow()
    required = x402_payment_required(service, reason)
    return {
        "type": "payment_required",
        "error": reason,
        "payment": payment_quote(service),
        "paymentFlow": flow,
        "retry": flow["retry"],
        "accepts": [_wire(requirement) for requirement in required.accepts],
        "resource": _wire(required.resource),
        "extensions": {},
        "x402Version": required.x402_version,
    }


def payment_required_headers(service: Service, reason: str = PAYMENT_REQUIRED) -> dict:
    """`PAYMENT-REQUIRED` (base64 of the x402 PaymentRequired) and `X-Payment-Required: true`."""
    return {
        "PAYMENT-REQUIRED": encode_payment_required_header(x402_payment_required(service, reason)),
        "X-Payment-Required": "true",
    }

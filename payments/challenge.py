"""The 402 answer: what a call costs and how to pay for it (seed 001's payment_required body).

Built from the service and settings only: answering 402 writes nothing, so an
anonymous caller cannot make Server402 store rows by asking for prices.
"""

import math

from django.conf import settings
from x402.extensions.bazaar import (
    DeclareMcpDiscoveryConfig,
    OutputConfig,
    declare_discovery_extension,
    declare_mcp_discovery_extension,
)
from x402.http.utils import encode_payment_required_header
from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo

from catalog.models import PricingPolicy, Service
from payments.instructions import payment_flow
from payments.models import Payment

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


def call_price_cents(policy: PricingPolicy) -> int:
    """What one x402-paid call costs: a policy selling N calls for one price, 1/N of it, rounded up to a cent.

    Whole cents keep the payments ledger exact (an x402 call is a one-call payment).
    """
    return math.ceil(policy.amount_cents / policy.max_calls)


def _usdc_requirements(amount_cents: int, pay_to: str) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact",
        network=settings.X402_NETWORK,
        asset=settings.X402_ASSET,
        amount=str(amount_cents * USDC_UNITS_PER_CENT),
        pay_to=pay_to,
        max_timeout_seconds=settings.X402_MAX_TIMEOUT_SECONDS,
        extra=dict(settings.X402_ASSET_DOMAIN),
    )


def x402_requirements(service: Service) -> list[PaymentRequirements]:
    """What one call costs in x402 terms (scheme exact, USDC on Base), or [] if the price is not in USD."""
    policy = service.pricing_policy
    if policy.currency != "USD":
        return []
    return [_usdc_requirements(call_price_cents(policy), settings.X402_PAY_TO)]


def payment_pay_url(payment: Payment) -> str:
    return f"{settings.PUBLIC_BASE_URL}/api/payments/{payment.id}/pay"


def payment_x402_requirements(payment: Payment) -> list[PaymentRequirements]:
    """What paying a whole legacy payment costs in x402 terms: its snapshot price, to its payee."""
    if payment.currency != "USD":
        return []
    return [_usdc_requirements(payment.amount_cents, payment.pay_to)]


def payment_x402_payment_required(payment: Payment, reason: str = PAYMENT_REQUIRED) -> PaymentRequired:
    return PaymentRequired(
        error=reason,
        resource=ResourceInfo(url=payment_pay_url(payment), description=f"{payment.max_calls} call(s) of "
                              f"{payment.service_id}", mime_type="application/json"),
        accepts=payment_x402_requirements(payment),
    )


def _ascii_label(text: str) -> str | None:
    # Bazaar indexes only printable ASCII of at most 32 characters.
    return text if text and len(text) <= 32 and all(" " <= c <= "~" for c in text) else None


def tool_resource(service: Service) -> ResourceInfo:
    """The tool as an x402 resource, with the bazaar's service name and tags."""
    tags = [tag for tag in service.tags if _ascii_label(tag)][:5]
    return ResourceInfo(
        url=tool_url(service), description=service.name, mime_type="application/json",
        service_name=_ascii_label(service.name) or _ascii_label(service.upstream_action),
        tags=tags or None,
    )


def bazaar_extension(service: Service) -> dict:
    """`extensions.bazaar`: how to call the tool and what it answers, for x402 discovery services."""
    extension = declare_discovery_extension(
        input=service.example_request or None,
        input_schema=service.input_schema,
        body_type="json",
        output=OutputConfig(example=service.example_response or None, schema=service.output_schema or None),
    )
    # The SDK leaves the method to its framework middleware; the tool is always a POST.
    extension["bazaar"]["info"]["input"]["method"] = "POST"
    return extension


def mcp_bazaar_extension(service: Service) -> dict:
    """`extensions.bazaar` for the tool as MCP sells it: the tool's name and input schema on /mcp."""
    return declare_mcp_discovery_extension(DeclareMcpDiscoveryConfig(
        tool_name=service.tool_name,
        input_schema=service.input_schema,
        description=service.description_for_model or None,
        transport="streamable-http",
        example=service.example_request or None,
        output=OutputConfig(example=service.example_response or None, schema=service.output_schema or None),
    ))


def x402_payment_required(service: Service, reason: str = PAYMENT_REQUIRED) -> PaymentRequired:
    """The x402 v2 PaymentRequired of a tool call, built with the official SDK's types."""
    return PaymentRequired(
        error=reason,
        resource=tool_resource(service),
        accepts=x402_requirements(service),
        extensions=bazaar_extension(service),
    )


def _wire(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def x402_wire(required: PaymentRequired) -> dict:
    """The x402 fields of a 402 body (accepts, resource, extensions, x402Version) from the SDK's object."""
    return {
        "accepts": [_wire(requirement) for requirement in required.accepts],
        "resource": _wire(required.resource),
        "extensions": required.extensions or {},
        "x402Version": required.x402_version,
    }


def payment_required_body(service: Service, required: PaymentRequired) -> dict:
    """Seed 001's 402 body around `required`; `error` is the precise reason the call was not paid for."""
    flow = payment_flow()
    return {
        "type": "payment_required",
        "error": required.error,
        "payment": payment_quote(service),
        "paymentFlow": flow,
        "retry": flow["retry"],
        **x402_wire(required),
    }


def payment_required_headers(required: PaymentRequired) -> dict:
    """`PAYMENT-REQUIRED` (base64 of the x402 PaymentRequired) and `X-Payment-Required: true`."""
    return {"PAYMENT-REQUIRED": encode_payment_required_header(required), "X-Payment-Required": "true"}

"""How to pay, in seed 001's words: the catalog's `payment` block.

The same block is embedded in every service's `discovery.paymentFlow` and in
402 answers, so it is built in one place from settings (network, asset, base
URL). Server402 documents only the flows it accepts: the Xiao Coin escrow of
the seed (X402-Guarantee) is not offered until it is built.
"""

from django.conf import settings

PAYMENT_RECORD_SCHEMA = {
    "properties": {
        "amountCents": {"type": "integer"},
        "billingMode": {"type": "string"},
        "clientId": {"type": "string"},
        "currency": {"type": "string"},
        "expiresAt": {"format": "date-time", "type": "string"},
        "internalServiceId": {
            "description": "Legacy internal service id, included only for backward compatibility.",
            "type": "string",
        },
        "maxCalls": {"type": "integer"},
        "paidAt": {"format": "date-time", "type": "string"},
        "payTo": {"type": "string"},
        "paymentId": {"type": "string"},
        "provider": {"type": "string"},
        "providerId": {"type": "string"},
        "remainingCalls": {"type": "integer"},
        "serviceId": {"description": "Canonical public service id.", "type": "string"},
        "status": {"type": "string"},
        "token": {"type": "string"},
        "usedCalls": {"type": "integer"},
    },
    "type": "object",
}

PAYMENT_FAILURES = [
    "payment required",
    "payment token expired",
    "payment token has no remaining calls",
    "api key required",
    "api key is not allowed to call this service",
]

# How an MCP client pays, in one sentence for every document that explains it (MCP instructions, discovery).
MCP_PAYMENT = (
    'A paid tool called without payment returns isError with structuredContent.status "payment_required" and '
    'x402 accepts[]: pay one of them and call the tool again with the PaymentPayload in '
    'params._meta["x402/payment"], or pass a paid payment token as the paymentToken argument; the receipt comes '
    'back in result._meta["x402/payment-response"].'
)

TOKEN_USAGE = {
    "header": "X-Payment-Token",
    "mcpArgument": "paymentToken",
    "httpUsage": "Send the paid token in the X-Payment-Token request header when calling /api/tools/*.",
    "mcpUsage": "Pass the paid token as the paymentToken argument when calling the MCP tool.",
}


def _required_response() -> dict:
    return {
        "status": 402,
        "contentType": "application/json",
        "headers": {
            "PAYMENT-REQUIRED": "base64/json x402PaymentRequired",
            "PAYMENT-SIGNATURE": "base64/json x402 Base USDC payment payload",
            "X-Payment-Required": "true",
            "X-Payment-Token": "payment.token",
        },
        "bodySchema": {
            "properties": {
                "accepts": {"items": {"type": "object"}, "type": "array"},
                "error": {"type": "string"},
                "extensions": {"type": "object"},
                "payment": PAYMENT_RECORD_SCHEMA,
                "paymentFlow": {"type": "object"},
                "resource": {"type": "object"},
                "retry": {"type": "object"},
                "type": {"const": "payment_required", "type": "string"},
                "x402Version": {"type": "integer"},
            },
            "required": ["type", "error", "payment", "paymentFlow", "retry"],
            "type": "object",
        },
        "x402Version": 2,
        "x402Header": "PAYMENT-REQUIRED",
        "paymentAsset": settings.X402_ASSET,
        "paymentNetwork": settings.X402_NETWORK,
    }


def _retry() -> dict:
    base, network, asset = settings.PUBLIC_BASE_URL, settings.X402_NETWORK, settings.X402_ASSET
    tool = f"{base}/api/tools/<serviceId>"
    return {
        "when": "Retry after paying one accepts[] requirement with Base USDC x402, "
        "or after payment.status is paid and the legacy token has remaining calls.",
        "http": [
            "Preferred x402 flow: call the paid /api/tools/* endpoint once and read accepts[] "
            "from the HTTP 402 response body or PAYMENT-REQUIRED header.",
            f"Pay one accepts[] requirement with an x402-compatible wallet/facilitator on network {network} "
            "using Base USDC.",
            "Retry the exact same request with PAYMENT-SIGNATURE set to the base64 JSON x402 payment payload.",
            "Legacy token flow: POST /api/payments with serviceId, complete/verify payment, "
            "then retry with X-Payment-Token set to payment.token.",
        ],
        "mcp": [
            "Call the tool without paymentToken to receive payment_required structuredContent.",
            "Preferred x402 clients should pay one accepts[] requirement and call the same MCP tool again with "
            "the x402 PaymentPayload in params._meta[\"x402/payment\"]; the receipt comes back in "
            "result._meta[\"x402/payment-response\"].",
            "Legacy MCP clients can complete or verify payment.paymentId, then call the same MCP tool again "
            "with paymentToken set to payment.token.",
        ],
        "examples": {
            "http402": [
                f"curl -i -X POST {tool}",
                f"Read accepts[0].network={network}, accepts[0].asset={asset}, accepts[0].amount, "
                "and accepts[0].payTo.",
                f"curl -X POST -H 'PAYMENT-SIGNATURE: <base64-json-x402-payment-payload>' {tool}",
            ],
            "legacyToken": [
                f"curl -X POST {base}/api/payments -H 'Content-Type: application/json' "
                "-d '{\"serviceId\":\"<serviceId>\"}'",
                f"curl -X POST -H 'X-Payment-Token: <payment.token>' {tool}",
            ],
            "mcp": [
                "Call tool <tool_name> with no paymentToken.",
                "After payment is complete, call <tool_name> again with paymentToken=<payment.token>.",
            ],
        },
        "failures": PAYMENT_FAILURES,
    }


def payment_flow() -> dict:
    """The legacy token flow and the 402 contract, as in seed 001 `payment.flow`."""
    return {
        "type": "http-402",
        "createPayment": {
            "method": "POST",
            "url": "/api/payments",
            "bodySchema": {
                "properties": {
                    "providerId": {"type": "string"},
                    "serviceId": {
                        "description": "Use the canonical service id from the catalog. "
                        "Legacy internal ids remain accepted for backward compatibility.",
                        "type": "string",
                    },
                },
                "required": ["serviceId"],
                "type": "object",
            },
            "responseSchema": PAYMENT_RECORD_SCHEMA,
        },
        "verifyPayment": {"method": "GET", "url": "/api/payments/{paymentId}", "responseSchema": PAYMENT_RECORD_SCHEMA},
        "token": TOKEN_USAGE,
        "requiredResponse": _required_response(),
        "retry": _retry(),
    }


def payment_guide(flow: dict | None = None) -> dict:
    """Seed 001's top-level `payment` block; `flow` reuses a payment_flow() already built."""
    flow = flow or payment_flow()
    return {
        "paymentHeader": "X-Payment-Token",
        "createPayment": "/api/payments",
        "verifyPayment": "/api/payments/{paymentId}",
        "token": TOKEN_USAGE,
        "requiredResponse": flow["requiredResponse"],
        "retry": flow["retry"],
        "flow": flow,
    }

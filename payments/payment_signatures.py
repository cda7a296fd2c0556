"""A `PAYMENT-SIGNATURE` header: decoded, and checked against what Server402 asked for.

Everything here is local and cheap, and runs before the facilitator is asked
or a row is written, so a malformed, mismatched or stale payment is refused
without cost: 400 when the header cannot be read, 402 with the x402 reason
code when it can be read but does not pay for this call.

The facilitator verifies the signature and re-checks recipient, amount and
window; the checks here are ours because they protect us, not the payer: the
accepted requirements must be the ones we offered, and validBefore must not
outlive maxTimeoutSeconds (the SDK does not bound it, and an authorization
that stays valid for a year is a liability in a payer's hands).
"""

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import jsonschema
from django.conf import settings
from pydantic import ValidationError
from x402.schemas import PaymentPayload, PaymentRequirements

from catalog.aliyun_client import longest_call_seconds

# Larger than any honest payload (about 1 KB), small enough to refuse before parsing.
MAX_HEADER_LENGTH = 8192
# Allowance for the payer's clock running ahead of ours.
CLOCK_SKEW_SECONDS = 60
# The SDK's facilitator refuses an authorization expiring within 6 s.
FACILITATOR_MARGIN_SECONDS = 6


def minimum_remaining_seconds(requirements: PaymentRequirements) -> int:
    """How long an authorization must stay valid to be accepted: through the upstream call and its
    settlement (else the upstream is paid for and the settle fails), within what the payer was offered."""
    budget = longest_call_seconds() + settings.X402_FACILITATOR_TIMEOUT + FACILITATOR_MARGIN_SECONDS
    return math.ceil(min(budget, requirements.max_timeout_seconds / 2))

# \Z, not $: Python's $ also matches before a final newline, and "nonce\n" must not pass for a
# new nonce (the SDK's hex parsing ignores the newline, so its signature still verifies).
_ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}\\Z"}
_UINT = {"type": "string", "pattern": "^[0-9]{1,78}\\Z"}
_EIP3009_PAYLOAD = {
    "type": "object",
    "required": ["authorization", "signature"],
    "properties": {
        "signature": {"type": "string", "pattern": "^0x([0-9a-fA-F]{2})+\\Z"},
        "authorization": {
            "type": "object",
            "required": ["from", "to", "value", "validAfter", "validBefore", "nonce"],
            "properties": {
                "from": _ADDRESS, "to": _ADDRESS, "value": _UINT, "validAfter": _UINT, "validBefore": _UINT,
                "nonce": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}\\Z"},
            },
        },
    },
}
_EIP3009_VALIDATOR = jsonschema.Draft202012Validator(_EIP3009_PAYLOAD)


class PaymentSignatureRefused(Exception):
    """Why a PAYMENT-SIGNATURE does not pay: HTTP status, x402 reason code and a sentence for the caller."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _malformed(message: str) -> PaymentSignatureRefused:
    return PaymentSignatureRefused(400, "invalid_payload", message)


def _refused(reason: str, message: str) -> PaymentSignatureRefused:
    return PaymentSignatureRefused(402, reason, message)


@dataclass(frozen=True)
class Authorization:
    """The EIP-3009 authorization inside a checked payload, normalised for the ledger."""

    payer: str  # lower case
    nonce: str  # lower case, 0x + 64 hex
    value: int
    valid_after: datetime
    valid_before: datetime


def payment_payload_decode(header: str) -> PaymentPayload:
    """The x402 v2 PaymentPayload in a PAYMENT-SIGNATURE header, or PaymentSignatureRefused."""
    if len(header) > MAX_HEADER_LENGTH:
        raise _malformed(f"PAYMENT-SIGNATURE is too long: at most {MAX_HEADER_LENGTH} characters")
    try:
        raw = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("PAYMENT-SIGNATURE is not base64") from None
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _malformed("PAYMENT-SIGNATURE is not base64 of JSON") from None
    return payment_payload_parse(document, source="PAYMENT-SIGNATURE")


def payment_payload_parse(document, *, source: str) -> PaymentPayload:
    """The x402 v2 PaymentPayload in an already decoded JSON value (a header's, or MCP's
    `_meta["x402/payment"]`), or PaymentSignatureRefused naming `source`."""
    if not isinstance(document, dict):
        raise _malformed(f"{source} must hold a JSON object (an x402 PaymentPayload)")
    version = document.get("x402Version")
    if type(version) is not int:
        raise _malformed(f"{source} has no x402Version")
    if version != 2:
        raise _refused("invalid_x402_version", f"x402Version {version} is not accepted: this server speaks x402 v2")
    try:
        return PaymentPayload.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise _malformed(f"{source} is not an x402 v2 PaymentPayload: {where}: {first['msg']}") from None


def _moment(seconds: int) -> datetime:
    # Far-future values are refused by the window check; clamp so they can still be compared.
    return datetime.fromtimestamp(min(seconds, 253_402_300_799), tz=UTC)


def authorization_check(payload: PaymentPayload, requirements: PaymentRequirements, *, resource_url: str,
                        now: datetime) -> Authorization:
    """The payload's authorization if it pays exactly `requirements` now, else PaymentSignatureRefused (402)."""
    accepted = payload.accepted
    if accepted.scheme != requirements.scheme:
        raise _refused("unsupported_scheme", f"scheme {accepted.scheme!r} is not accepted; pay with 'exact'")
    if accepted.network != requirements.network:
        raise _refused("network_mismatch",
                       f"payment is for network {accepted.network}; this server accepts {requirements.network}")
    if accepted.asset.lower() != requirements.asset.lower():
        raise _refused("asset_mismatch", f"payment is in asset {accepted.asset}; this server accepts "
                                         f"{requirements.asset} (USDC)")
    if payload.resource is not None and payload.resource.url != resource_url:
        raise _refused("resource_mismatch", f"payment is for {payload.resource.url}, not {resource_url}")
    problem = next(iter(_EIP3009_VALIDATOR.iter_errors(payload.payload)), None)
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "payload"
        raise _malformed(f"the payment payload is not an EIP-3009 authorization: {where}: {problem.message}")
    authorization = payload.payload["authorization"]
    if authorization["to"].lower() != requirements.pay_to.lower() or accepted.pay_to.lower() != authorization[
            "to"].lower():
        raise _refused("invalid_exact_evm_payload_recipient_mismatch",
                       f"payment is to {authorization['to']}; pay {requirements.pay_to}")
    if int(authorization["value"]) != int(requirements.amount) or accepted.amount != requirements.amount:
        raise _refused("invalid_exact_evm_payload_authorization_value_mismatch",
                       f"payment is for {authorization['value']} atomic units; this call costs exactly "
                       f"{requirements.amount}")
    signature_bytes = (len(payload.payload["signature"]) - 2) // 2
    # 65 bytes is an account's (r, s, v); smart-wallet signatures are longer and need a chain to check.
    if signature_bytes != 65 and not (signature_bytes > 65 and settings.X402_FACILITATOR_URL):
        raise _refused("invalid_exact_evm_payload_signature",
                       f"signature is {signature_bytes} bytes; an account's EIP-712 signature is 65")
    clock = int(now.timestamp())
    valid_after, valid_before = int(authorization["validAfter"]), int(authorization["validBefore"])
    if valid_after > clock + CLOCK_SKEW_SECONDS:
        raise _refused("invalid_exact_evm_payload_authorization_valid_after",
                       "payment authorization is not valid yet (validAfter is in the future)")
    if valid_before < clock + FACILITATOR_MARGIN_SECONDS:
        raise _refused("invalid_exact_evm_payload_authorization_valid_before",
                       "payment authorization has expired (validBefore has passed); sign a new one")
    remaining = minimum_remaining_seconds(requirements)
    if valid_before < clock + remaining:
        raise _refused("invalid_exact_evm_payload_authorization_valid_before",
                       f"payment authorization expires too soon: validBefore must be at least {remaining} s from "
                       f"now, for the call and its settlement; sign a new one")
    latest = clock + requirements.max_timeout_seconds + CLOCK_SKEW_SECONDS
    if valid_before > latest:
        raise _refused("invalid_exact_evm_payload_authorization_valid_before",
                       f"payment authorization is valid for too long: validBefore may be at most "
                       f"{requirements.max_timeout_seconds} s from now")
    return Authorization(
        payer=authorization["from"].lower(), nonce=authorization["nonce"].lower(), value=int(authorization["value"]),
        valid_after=_moment(valid_after), valid_before=_moment(valid_before),
    )

"""The x402 steps shared by the paid call and the legacy payment: verify a PAYMENT-SIGNATURE, settle it.

Verification writes nothing (a refused payment leaves no trace); settlement
writes its outcome to the ledger whatever it is, including "unknown" when the
facilitator did not answer.
"""

import logging
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import status
from x402.schemas import PaymentPayload, PaymentRequirements, SettleResponse

from payments import challenge, facilitators
from payments import services as payment_services
from payments.models import ApiKey, Payment, X402Authorization
from payments.payment_signatures import (
    Authorization,
    PaymentSignatureRefused,
    authorization_check,
    payment_payload_decode,
    payment_payload_parse,
)
from payments.selectors import x402_authorization_seen
from server402 import database_outages

logger = logging.getLogger(__name__)

# The facilitator's reason codes that callers meet most, in words they can act on.
_FACILITATOR_REASONS = {
    "invalid_exact_evm_payload_signature": "the signature is not the payer's (forged, or the authorization was "
                                           "altered after signing)",
    "invalid_exact_evm_insufficient_balance": "the payer's USDC balance is too low",
    "invalid_exact_evm_nonce_already_used": "this authorization's nonce was already used on chain",
    "invalid_exact_evm_payload_authorization_valid_before": "the authorization has expired",
}


@dataclass
class X402Settlement:
    """An x402 payment being used: what was presented, what was asked, and its ledger row."""

    payload: PaymentPayload
    requirements: PaymentRequirements
    ledger: X402Authorization


def x402_authorization_verify(*, header: str | None = None, document=None, requirements: list[PaymentRequirements],
                              resource_url: str, refuse) -> tuple[PaymentPayload, PaymentRequirements, Authorization]:
    """Decode, check and verify a payment against what was offered; `refuse(status, code, message)`
    builds the exception to raise. Writes nothing: a refused payment leaves no trace.

    The payment is a PAYMENT-SIGNATURE `header`, or the `document` it encodes
    (MCP carries the PaymentPayload as JSON in `_meta["x402/payment"]`).
    """
    if not requirements:
        raise refuse(status.HTTP_402_PAYMENT_REQUIRED, "unsupported_scheme",
                     "this price is not in USD, so it cannot be paid with x402 USDC")
    offered = requirements[0]
    try:
        payload = (payment_payload_decode(header) if header is not None
                   else payment_payload_parse(document, source='_meta["x402/payment"]'))
        authorization = authorization_check(payload, offered, resource_url=resource_url, now=timezone.now())
    except PaymentSignatureRefused as refused:
        raise refuse(refused.status, refused.reason, refused.message) from None
    # A replay is refused here without troubling the facilitator; the ledger's
    # unique constraint is what actually decides when replays race.
    if x402_authorization_seen(payer=authorization.payer, nonce=authorization.nonce):
        raise refuse(status.HTTP_402_PAYMENT_REQUIRED, payment_services.NONCE_USED_CODE, payment_services.NONCE_USED)
    try:
        verdict = facilitators.facilitator().verify(payload, offered)
    except facilitators.FacilitatorUnavailable as unavailable:
        raise refuse(status.HTTP_503_SERVICE_UNAVAILABLE, "facilitator_unavailable",
                     f"{unavailable.reason}; nothing was charged, retry shortly") from None
    if not verdict.is_valid:
        reason = verdict.invalid_reason or "invalid_payment"
        why = _FACILITATOR_REASONS.get(reason, reason)
        raise refuse(status.HTTP_402_PAYMENT_REQUIRED, reason, f"payment authorization was refused: {why}")
    return payload, offered, authorization


class SettlementUnrecorded(database_outages.DatabaseUnavailable):
    """The facilitator answered a settlement, and the database could not take the answer."""

    def __init__(self, message: str, settlement: SettleResponse | None):
        super().__init__(message)
        self.settlement = settlement


def _settlement_recorded(x402: X402Settlement, settlement: SettleResponse | None, **record) -> X402Authorization:
    """x402_settlement_record, surviving one lost database connection (it is idempotent).

    The facilitator's answer exists nowhere else: dropped for a connection, a
    payer whose money moved would be left with nothing to show for it. When
    the database stays out of reach, the answer goes to the log for the
    operator, and to the caller on SettlementUnrecorded.
    """
    try:
        return database_outages.write_surviving_a_lost_connection(
            lambda: payment_services.x402_settlement_record(ledger=x402.ledger, settlement=settlement, **record))
    except database_outages.DatabaseUnavailable as unavailable:
        if settlement is not None:
            logger.error("the x402 settlement of payment %s (payer %s, nonce %s) could not be recorded (%s): "
                         "success=%s transaction=%s error=%s; its ledger row is left to reconcile",
                         x402.ledger.payment_id, x402.ledger.payer, x402.ledger.nonce, unavailable,
                         settlement.success, settlement.transaction or "-", settlement.error_reason or "-")
        raise SettlementUnrecorded(str(unavailable), settlement) from unavailable


def x402_settle(x402: X402Settlement, api_key: ApiKey | None = None) -> SettleResponse:
    """Settle through the facilitator and record the outcome; an unanswered settle is a failed one.

    Raises SettlementUnrecorded when the database cannot record the outcome.
    """
    try:
        settlement = facilitators.facilitator().settle(x402.payload, x402.requirements)
    except facilitators.FacilitatorUnavailable as unavailable:
        x402.ledger = _settlement_recorded(x402, None, error=unavailable.reason)
        return SettleResponse(success=False, error_reason="settlement_unconfirmed",
                              error_message=unavailable.reason, transaction="", network=x402.requirements.network,
                              payer=x402.ledger.payer)
    x402.ledger = _settlement_recorded(x402, settlement, api_key=api_key)
    if settlement.success and x402.ledger.status != X402Authorization.Status.SETTLED:
        # The facilitator said success but the ledger could not take it as proof: not a paid call.
        return SettleResponse(success=False, error_reason=payment_services.SETTLEMENT_NOT_PROVEN,
                              error_message=x402.ledger.error, transaction=settlement.transaction,
                              network=x402.requirements.network, payer=x402.ledger.payer)
    return settlement


def x402_recorded_settlement(x402: X402Settlement) -> SettleResponse:
    """The settlement the ledger already holds (an earlier attempt of the same job settled it)."""
    ledger = x402.ledger
    return SettleResponse(success=True, transaction=ledger.transaction, network=ledger.network, payer=ledger.payer)


class X402PaymentRefused(Exception):
    """Paying a legacy payment with x402 did not happen; nothing was charged unless `settlement` says so."""

    def __init__(self, status_code: int, code: str, message: str, settlement: SettleResponse | None = None):
        super().__init__(message)
        self.status = status_code
        self.code = code
        self.message = message
        self.settlement = settlement


def payment_pay_with_x402(*, payment: Payment, api_key: ApiKey | None, header: str | None) -> SettleResponse:
    """Pay a pending legacy payment (all its calls) with one x402 authorization; its token then works.

    Raises PaymentRefused when the payment cannot be paid (already paid,
    expired, another client's) and X402PaymentRefused when the x402 payment
    itself is missing, invalid or does not settle.
    """
    if not header:
        raise X402PaymentRefused(status.HTTP_402_PAYMENT_REQUIRED, "", challenge.PAYMENT_REQUIRED)
    payment_services.payment_payable_check(payment=payment, api_key=api_key)
    payload, offered, authorization = x402_authorization_verify(
        header=header, requirements=challenge.payment_x402_requirements(payment),
        resource_url=challenge.payment_pay_url(payment), refuse=X402PaymentRefused)
    try:
        ledger = payment_services.payment_x402_reserve(
            payment=payment, api_key=api_key, authorization=authorization, requirements=offered,
            facilitator=facilitators.facilitator().name)
    except payment_services.PaymentRefused as refused:
        if refused.code:
            raise X402PaymentRefused(status.HTTP_402_PAYMENT_REQUIRED, refused.code, refused.reason) from None
        raise
    settlement = x402_settle(X402Settlement(payload, offered, ledger), api_key)
    if not settlement.success:
        reason = settlement.error_reason or "settlement_failed"
        raise X402PaymentRefused(status.HTTP_402_PAYMENT_REQUIRED, reason,
                                 f"payment settlement failed: {reason}; the payment is still pending", settlement)
    payment.refresh_from_db()
    return settlement

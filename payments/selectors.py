"""Reads of the payments app."""

from datetime import UTC

from payments import credentials
from payments.models import ApiKey, Payment, X402Authorization


class ApiKeyRejected(Exception):
    """A presented key that does not authenticate; `reason` is the caller's 401 sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


KEY_INVALID = "api key is not valid"
KEY_REVOKED = "api key has been revoked"


def api_key_presented(headers) -> str | None:
    """The key a request carries in `Authorization: Bearer ...` or `X-API-Key`, if any."""
    authorization = headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("X-API-Key", "").strip() or None


def api_key_authenticate(key: str) -> ApiKey:
    """The active key row for a presented key; ApiKeyRejected otherwise (unknown, wrong, revoked)."""
    prefix = credentials.api_key_prefix(key)
    row = ApiKey.objects.filter(prefix=prefix).first() if prefix else None
    if not credentials.api_key_matches(key, row.secret_hash if row else None):
        raise ApiKeyRejected(KEY_INVALID)
    if row.revoked_at is not None:
        raise ApiKeyRejected(KEY_REVOKED)
    return row


def api_key_allows(api_key: ApiKey, service) -> bool:
    return api_key.allow_all_services or api_key.allowed_services.filter(pk=service.pk).exists()


def _iso(moment) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def payment_record(payment: Payment, *, viewer: ApiKey | None, show_token: bool = False) -> dict:
    """Seed 001's payment record. The token is shown to the bound client, or when asked at creation."""
    state = payment.state()
    record = {
        "paymentId": payment.id,
        "serviceId": payment.service_id,
        "internalServiceId": payment.service.internal_id,
        "status": state,
        "amountCents": payment.amount_cents,
        "currency": payment.currency,
        "billingMode": payment.billing_mode,
        "maxCalls": payment.max_calls,
        "usedCalls": payment.used_calls,
        "remainingCalls": payment.remaining_calls if state == "paid" else 0,
        "expiresAt": _iso(payment.expires_at),
        "paidAt": _iso(payment.paid_at),
        "payTo": payment.pay_to,
        "provider": payment.provider,
        "providerId": payment.provider_id,
        "clientId": payment.client.client_id if payment.client_id else None,
        "method": payment.method or None,
    }
    # Absent rather than null: the seed's schema types these fields as strings.
    record = {key: value for key, value in record.items() if value is not None}
    if payment.method == Payment.Method.X402:
        settled = payment.x402_authorizations.filter(status=X402Authorization.Status.SETTLED).first()
        if settled is not None:
            record["receipt"] = {"network": settled.network, "payer": settled.payer,
                                 "transaction": settled.transaction, "settledAt": _iso(settled.settled_at)}
    bound_viewer = viewer is not None and payment.client_id == viewer.pk
    if show_token or bound_viewer:
        record["token"] = credentials.payment_token(payment.id)
    return record


def x402_authorization_seen(*, payer: str, nonce: str) -> bool:
    """Whether this (payer, nonce) is already in the ledger (lower-case values)."""
    return X402Authorization.objects.filter(payer=payer, nonce=nonce).exists()

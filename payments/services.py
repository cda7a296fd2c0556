"""Writes of the payments app: API keys, payments, token calls and call records.

Money moves only through conditional UPDATEs (`... WHERE balance >= price`,
`... WHERE used_calls < max_calls`), so concurrent requests on any number of
processes cannot overspend a balance or a token: the database decides.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from x402.schemas import PaymentRequirements, SettleResponse

from catalog.models import Service
from payments import credentials
from payments.challenge import call_price_cents
from payments.models import ApiKey, ApiKeyEvent, Payment, ToolCall, X402Authorization
from payments.payment_signatures import Authorization


class PaymentRefused(Exception):
    """A payment that cannot pay for this call; `reason` is the sentence the caller gets (402).

    `code` is the x402 reason code when there is one (invalidReason).
    """

    def __init__(self, reason: str, code: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.code = code


# The precise reasons a token is refused (seed 001 `retry.failures` plus the ones it implies).
TOKEN_INVALID = "payment token is not valid"
TOKEN_UNPAID = "payment is not paid yet"
TOKEN_EXPIRED = "payment token expired"
TOKEN_USED_UP = "payment token has no remaining calls"
TOKEN_OTHER_SERVICE = "payment token is for another service"
TOKEN_OTHER_CLIENT = "payment token belongs to another client"
NONCE_USED = "payment authorization was already used (its nonce is spent); sign a new one"
NONCE_USED_CODE = "invalid_exact_evm_nonce_already_used"


@dataclass(frozen=True)
class NewApiKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


class ApiKeyRevoked(Exception):
    """A write a revoked key cannot take (a top-up, a rotation): revoking is final."""


# How the audit log writes an allow-list that lets the key call every service.
EVERY_SERVICE = "every service"


def _allow_list(services) -> list[str] | str:
    ids = sorted({service.pk for service in services})
    return ids or EVERY_SERVICE


def _allow_list_of(api_key: ApiKey) -> list[str] | str:
    if api_key.allow_all_services:
        return EVERY_SERVICE
    return sorted(api_key.allowed_services.values_list("pk", flat=True)) or EVERY_SERVICE


def _limits_check(rate_limit_per_minute: int | None, daily_quota: int | None) -> None:
    for name, value in (("rate_limit_per_minute", rate_limit_per_minute), ("daily_quota", daily_quota)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative")


def _audit(api_key: ApiKey, actor, action: str, changes: dict) -> ApiKeyEvent:
    return ApiKeyEvent.objects.create(api_key=api_key, actor=actor, actor_name=actor.get_username() if actor else "",
                                      action=action, changes=changes)


def api_key_create(*, label: str, allowed_services: list[Service] | None = None,
                   rate_limit_per_minute: int | None = None, daily_quota: int | None = None,
                   balance_cents: int = 0, actor=None) -> NewApiKey:
    """A new key; its secret is returned here and nowhere else. No allow-list: every service.

    `actor` is the operator who creates it (None: a management command);
    the key's audit log starts with its first settings.
    """
    if balance_cents < 0:
        raise ValueError("balance_cents must not be negative")
    _limits_check(rate_limit_per_minute, daily_quota)
    secret, prefix, secret_hash = credentials.api_key_generate()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            prefix=prefix, secret_hash=secret_hash, label=label, allow_all_services=not allowed_services,
            rate_limit_per_minute=rate_limit_per_minute, daily_quota=daily_quota, balance_cents=balance_cents,
            created_by=actor,
        )
        if allowed_services:
            api_key.allowed_services.set(allowed_services)
        _audit(api_key, actor, ApiKeyEvent.Action.CREATED, {
            "label": label, "allowed_services": _allow_list(allowed_services or []),
            "rate_limit_per_minute": rate_limit_per_minute, "daily_quota": daily_quota,
            "balance_cents": balance_cents,
        })
    return NewApiKey(api_key, secret)


def api_key_update(*, api_key: ApiKey, actor, label: str, allowed_services: list[Service],
                   rate_limit_per_minute: int | None, daily_quota: int | None) -> ApiKey:
    """Change a key's label, allow-list (empty: every service), rate limit and daily quota (None: none).

    Only real changes are written, each as {field: [old, new]} in one audit
    entry; when nothing differs nothing is written. Returns the key as stored.
    """
    _limits_check(rate_limit_per_minute, daily_quota)
    with transaction.atomic():
        # Locked, so two operators saving at once each log the change they really made.
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        before = {"label": locked.label, "allowed_services": _allow_list_of(locked),
                  "rate_limit_per_minute": locked.rate_limit_per_minute, "daily_quota": locked.daily_quota}
        after = {"label": label, "allowed_services": _allow_list(allowed_services),
                 "rate_limit_per_minute": rate_limit_per_minute, "daily_quota": daily_quota}
        changes = {field: [before[field], after[field]] for field in before if before[field] != after[field]}
        if not changes:
            return locked
        locked.label = label
        locked.rate_limit_per_minute = rate_limit_per_minute
        locked.daily_quota = daily_quota
        locked.allow_all_services = not allowed_services
        locked.save(update_fields=["label", "rate_limit_per_minute", "daily_quota", "allow_all_services"])
        if "allowed_services" in changes:
            locked.allowed_services.set(allowed_services)
        _audit(locked, actor, ApiKeyEvent.Action.UPDATED, changes)
    return locked


def api_key_revoke(*, api_key: ApiKey, actor=None) -> ApiKey:
    """Revoke now; later requests with the key get 401. Revoking twice keeps the first time (and one entry)."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if revoked:
            _audit(api_key, actor, ApiKeyEvent.Action.REVOKED, {"status": ["active", "revoked"]})
    api_key.refresh_from_db(fields=["revoked_at"])
    return api_key


def api_key_top_up(*, api_key: ApiKey, amount_cents: int, actor=None) -> ApiKey:
    """Add prepaid balance (cents) to an active key; ApiKeyRevoked for a revoked one."""
    if amount_cents <= 0:
        raise ValueError("amount_cents must be positive")
    with transaction.atomic():
        # Locked, so the balance the audit entry reports before and after is exact under concurrent spending.
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if locked.revoked_at is not None:
            raise ApiKeyRevoked("a revoked key cannot be topped up")
        ApiKey.objects.filter(pk=locked.pk).update(balance_cents=F("balance_cents") + amount_cents)
        _audit(locked, actor, ApiKeyEvent.Action.TOPPED_UP, {
            "amount_cents": amount_cents, "balance_cents": [locked.balance_cents, locked.balance_cents + amount_cents],
        })
    api_key.refresh_from_db(fields=["balance_cents"])
    return api_key


def api_key_rotate(*, api_key: ApiKey, actor=None) -> NewApiKey:
    """A new secret for an active key; the old one stops authenticating as this returns.

    The prefix stays, so the key's client id (key_<prefix>), its payments,
    calls, rate-limit windows and quota are unchanged: only the credential is
    replaced. ApiKeyRevoked for a revoked key.
    """
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if locked.revoked_at is not None:
            raise ApiKeyRevoked("a revoked key cannot be rotated")
        secret, _, locked.secret_hash = credentials.api_key_generate(prefix=locked.prefix)
        locked.save(update_fields=["secret_hash"])
        _audit(locked, actor, ApiKeyEvent.Action.ROTATED, {})
    return NewApiKey(locked, secret)


def api_key_touch(*, api_key: ApiKey) -> None:
    """Record the last use, at most once a minute per key to spare the database."""
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def payment_create(*, service: Service, client: ApiKey | None = None, provider_id: str | None = None) -> Payment:
    """A pending payment for `service`, its price and rules copied from the service's policy."""
    policy = service.pricing_policy
    return Payment.objects.create(
        id=credentials.payment_id_generate(),
        service=service,
        policy=policy,
        amount_cents=policy.amount_cents,
        currency=policy.currency,
        billing_mode=policy.billing_mode,
        max_calls=policy.max_calls,
        settle_mode=policy.settle_mode,
        allow_reuse=policy.allow_reuse,
        bind_client=policy.bind_client,
        provider_id=provider_id or service.payment_provider_id,
        provider=service.payment_provider,
        pay_to=settings.X402_PAY_TO,
        client=client,
        flow=Payment.Flow.TOKEN,
        expires_at=timezone.now() + timedelta(seconds=settings.PAYMENT_TTL_SECONDS),
    )


class InsufficientBalance(Exception):
    pass


def payment_pay_from_balance(*, payment: Payment, api_key: ApiKey) -> Payment:
    """Pay a pending payment from the key's prepaid balance; the payment is bound to that key.

    Raises PaymentRefused when the payment is not payable by this key, and
    InsufficientBalance when the balance is short (nothing is debited then).
    """
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        now = timezone.now()
        _payable(locked, api_key, now)
        if locked.x402_authorizations.filter(status__in=["reserved", "unknown"]).exists():
            raise PaymentRefused("payment is already being paid")
        debited = ApiKey.objects.filter(
            pk=api_key.pk, revoked_at__isnull=True, balance_cents__gte=locked.amount_cents
        ).update(balance_cents=F("balance_cents") - locked.amount_cents)
        if not debited:
            raise InsufficientBalance()
        _mark_paid(locked, method=Payment.Method.BALANCE, api_key=api_key, now=now)
    api_key.refresh_from_db(fields=["balance_cents"])
    return locked


def _payable(locked: Payment, api_key: ApiKey | None, now) -> None:
    if locked.status != Payment.Status.PENDING:
        raise PaymentRefused("payment is already paid")
    if locked.expires_at <= now:
        raise PaymentRefused("payment expired before it was paid; create a new one")
    if locked.client_id is not None and locked.client_id != getattr(api_key, "pk", None):
        raise PaymentRefused("payment belongs to another client")


def payment_payable_check(*, payment: Payment, api_key: ApiKey | None) -> None:
    """PaymentRefused unless `payment` can be paid now by `api_key` (or anonymously); a read, no lock."""
    _payable(payment, api_key, timezone.now())


def _mark_paid(locked: Payment, *, method: str, api_key: ApiKey | None, now) -> None:
    locked.status = Payment.Status.PAID
    locked.method = method
    if api_key is not None and (locked.bind_client or locked.client_id):
        locked.client = api_key
    locked.paid_at = now
    locked.expires_at = now + timedelta(seconds=settings.PAYMENT_TTL_SECONDS)
    locked.save(update_fields=["status", "method", "client", "paid_at", "expires_at"])


def _ledger_insert(*, payment: Payment, authorization: Authorization, requirements: PaymentRequirements,
                   facilitator: str) -> X402Authorization:
    """The (payer, nonce) row; the database refuses a second one, in any process."""
    try:
        with transaction.atomic():
            return X402Authorization.objects.create(
                payer=authorization.payer, nonce=authorization.nonce, network=requirements.network,
                asset=requirements.asset, pay_to=requirements.pay_to, amount=authorization.value,
                valid_after=authorization.valid_after, valid_before=authorization.valid_before, payment=payment,
                facilitator=facilitator,
            )
    except IntegrityError:
        if X402Authorization.objects.filter(payer=authorization.payer, nonce=authorization.nonce).exists():
            raise PaymentRefused(NONCE_USED, NONCE_USED_CODE) from None
        raise PaymentRefused("payment is already being paid") from None


def x402_call_reserve(*, service: Service, api_key: ApiKey | None, authorization: Authorization,
                      requirements: PaymentRequirements, facilitator: str) -> tuple[Payment, X402Authorization]:
    """A one-call payment for `service`, its call already taken, and the authorization's ledger row.

    The payment stays pending until the authorization settles. Raises
    PaymentRefused (NONCE_USED) when the authorization was seen before. Call
    inside a transaction that also opens the call's record.
    """
    policy = service.pricing_policy
    payment = Payment.objects.create(
        id=credentials.payment_id_generate(), service=service, policy=policy, amount_cents=call_price_cents(policy),
        currency=policy.currency, billing_mode=policy.billing_mode, max_calls=1, settle_mode=policy.settle_mode,
        allow_reuse=False, bind_client=policy.bind_client, provider_id=service.payment_provider_id,
        provider=service.payment_provider, pay_to=requirements.pay_to,
        client=api_key if policy.bind_client else None, method=Payment.Method.X402, flow=Payment.Flow.X402_CALL,
        used_calls=1,
        expires_at=timezone.now() + timedelta(seconds=settings.PAYMENT_TTL_SECONDS),
    )
    ledger = _ledger_insert(payment=payment, authorization=authorization, requirements=requirements,
                            facilitator=facilitator)
    return payment, ledger


def payment_x402_reserve(*, payment: Payment, api_key: ApiKey | None, authorization: Authorization,
                         requirements: PaymentRequirements, facilitator: str) -> X402Authorization:
    """Hold a pending legacy payment for one x402 authorization until it settles (x402_settlement_record)."""
    with transaction.atomic():
        locked = Payment.objects.select_for_update().get(pk=payment.pk)
        _payable(locked, api_key, timezone.now())
        return _ledger_insert(payment=locked, authorization=authorization, requirements=requirements,
                              facilitator=facilitator)


SETTLEMENT_NOT_PROVEN = "settlement_not_proven"


def _settlement_problem(ledger: X402Authorization, settlement: SettleResponse) -> str:
    """Why a facilitator's "success" does not prove this authorization was settled, or "" if it does."""
    if not settlement.transaction:
        return "the facilitator reported success without a transaction"
    if (settlement.payer or ledger.payer).lower() != ledger.payer:
        return f"the facilitator settled for payer {settlement.payer}, not {ledger.payer}"
    return ""


def x402_settlement_record(*, ledger: X402Authorization, settlement: SettleResponse | None, error: str = "",
                           api_key: ApiKey | None = None) -> X402Authorization:
    """Write down how settling an authorization ended; a proven success pays its payment.

    `settlement` None means the facilitator gave no answer: the outcome is
    unknown, as it is for a failure that names a transaction (broadcast, not
    confirmed) and for a "success" that proves nothing (no transaction,
    another payer, a transaction already another payment's); unknown rows
    stay visible for the operator to reconcile. A proven success is recorded
    over any earlier belief ("unknown" after a reconcile, even "unsettled"):
    money that moved is never dropped; any other outcome is written once,
    over "reserved".
    """
    now = timezone.now()
    Status = X402Authorization.Status
    problem = _settlement_problem(ledger, settlement) if settlement is not None and settlement.success else ""
    if settlement is not None and settlement.success and not problem:
        try:
            with transaction.atomic():
                # Payment first, then ledger: the order payment_x402_reserve takes them in, or concurrent
                # payers of one payment deadlock on the ledger's unique index.
                locked = Payment.objects.select_for_update().get(pk=ledger.payment_id)
                # Proof of money moved wins over any earlier belief, even "released": it must never be dropped.
                written = X402Authorization.objects.filter(
                    pk=ledger.pk, status__in=[Status.RESERVED, Status.UNKNOWN, Status.UNSETTLED, Status.FAILED],
                ).update(status=Status.SETTLED, transaction=settlement.transaction[:100], settled_at=now, error="")
                if written and locked.status == Payment.Status.PENDING:
                    _mark_paid(locked, method=Payment.Method.X402, api_key=api_key, now=now)
        except IntegrityError:
            problem = f"transaction {settlement.transaction} is already recorded for another payment"
    if settlement is None or not settlement.success or problem:
        # Failed means no money moved; anything less certain is unknown and blocks paying again.
        refused = (settlement is not None and not settlement.success and not settlement.transaction
                   and settlement.error_reason != "settlement_pending")
        reason = problem or error or (settlement.error_reason if settlement is not None else "") or "settle failed"
        X402Authorization.objects.filter(pk=ledger.pk, status=Status.RESERVED).update(
            status=Status.FAILED if refused else Status.UNKNOWN,
            error=f"{SETTLEMENT_NOT_PROVEN}: {reason}"[:300] if problem else reason[:300],
            transaction=(settlement.transaction or "")[:100] if settlement is not None else "",
        )
    ledger.refresh_from_db()
    return ledger


def x402_authorization_release(*, ledger: X402Authorization) -> None:
    """The call yielded no result and the authorization was never settled: nothing was charged.

    The row stays, so the same authorization cannot be presented again.
    """
    X402Authorization.objects.filter(pk=ledger.pk, status=X402Authorization.Status.RESERVED).update(
        status=X402Authorization.Status.UNSETTLED)


def _refusal(payment: Payment | None, service: Service, api_key: ApiKey | None) -> str:
    """Why a token could not take a call, in the precedence agents can act on."""
    if payment is None:
        return TOKEN_INVALID
    if payment.status != Payment.Status.PAID:
        return TOKEN_UNPAID
    if payment.expires_at <= timezone.now():
        return TOKEN_EXPIRED
    if not payment.allow_reuse and payment.service_id != service.pk:
        return TOKEN_OTHER_SERVICE
    if payment.bind_client and payment.client_id is not None and payment.client_id != getattr(api_key, "pk", None):
        return TOKEN_OTHER_CLIENT
    return TOKEN_USED_UP


def token_call_reserve(*, token: str, service: Service, api_key: ApiKey | None) -> Payment:
    """Take one call of the token's payment for `service`, atomically, or raise PaymentRefused.

    The call is reserved, not spent: token_call_give_back() returns it when the
    call yields no result.
    """
    payment_id = credentials.payment_token_id(token)
    payment = Payment.objects.filter(pk=payment_id).first() if payment_id else None
    refusal = _refusal(payment, service, api_key)
    # TOKEN_USED_UP is what remains once every other reason is ruled out: try to take a call.
    if refusal != TOKEN_USED_UP:
        raise PaymentRefused(refusal)
    taken = Payment.objects.filter(
        pk=payment.pk, status=Payment.Status.PAID, expires_at__gt=timezone.now(), used_calls__lt=F("max_calls")
    ).update(used_calls=F("used_calls") + 1)
    if not taken:
        payment.refresh_from_db()
        raise PaymentRefused(_refusal(payment, service, api_key))
    payment.refresh_from_db(fields=["used_calls"])
    return payment


def token_call_give_back(*, payment: Payment) -> None:
    """Return a reserved call that produced no result."""
    Payment.objects.filter(pk=payment.pk, used_calls__gt=0).update(used_calls=F("used_calls") - 1)


def tool_call_start(*, service: Service, api_key: ApiKey | None, payment: Payment | None,
                    payment_method: str) -> ToolCall:
    """The call's record, written before the upstream is asked (see ToolCall)."""
    return ToolCall.objects.create(
        service=service, api_key=api_key, client_id=api_key.client_id if api_key else "",
        payment=payment, payment_method=payment_method,
    )


def tool_call_finish(*, call: ToolCall, outcome: str, http_status: int, latency_ms: int | None,
                     amount_cents: int, upstream_code: str = "", upstream_request_id: str = "",
                     error: str = "") -> ToolCall:
    """Close a call's record with how it ended and what it cost the caller."""
    fields = {
        "outcome": outcome, "http_status": http_status, "latency_ms": latency_ms, "amount_cents": amount_cents,
        "upstream_code": upstream_code[:100], "upstream_request_id": upstream_request_id[:100],
        "error": error[:500], "finished_at": timezone.now(),
    }
    # Conditional, so a record already reconciled as abandoned keeps saying so.
    if ToolCall.objects.filter(pk=call.pk, outcome=ToolCall.Outcome.IN_PROGRESS).update(**fields):
        for name, value in fields.items():
            setattr(call, name, value)
    else:
        call.refresh_from_db()
    return call


def tool_calls_reconcile(*, older_than: timedelta) -> int:
    """Close the records a dead process left `in_progress` and give their token calls back.

    A call is only reconciled once it is older than any upstream attempt can
    last, so a live process never has its call taken from under it. Returns how
    many were reconciled.
    """
    now = timezone.now()
    # A job's call waits for its worker, however long the queue: the jobs' reaper answers for it.
    stale = ToolCall.objects.filter(outcome=ToolCall.Outcome.IN_PROGRESS, started_at__lt=now - older_than,
                                    job__isnull=True)
    reconciled = 0
    for call_id, payment_id in stale.values_list("pk", "payment_id"):
        with transaction.atomic():
            closed = ToolCall.objects.filter(pk=call_id, outcome=ToolCall.Outcome.IN_PROGRESS).update(
                outcome=ToolCall.Outcome.ABANDONED, finished_at=now, amount_cents=0,
                error="the call was cut off before it finished; its payment was given back",
            )
            if closed and payment_id:
                Payment.objects.filter(pk=payment_id, used_calls__gt=0).update(used_calls=F("used_calls") - 1)
                # Whether a settlement was in flight when the process died cannot be known here.
                X402Authorization.objects.filter(payment_id=payment_id, status=X402Authorization.Status.RESERVED) \
                    .update(status=X402Authorization.Status.UNKNOWN, error="the call was cut off before it finished")
            reconciled += closed
    return reconciled


def tool_call_abandon(*, call: ToolCall, outcome: str, http_status: int, error: str) -> bool:
    """Close a call that will deliver nothing after all (its job's worker died, its job timed out) and give
    its payment's call back; False when it had already ended as a failure, and been given back then.

    Unlike tool_call_finish this also takes back a call recorded as succeeded, whose result was lost
    before it reached anyone: nobody is charged for a result nobody can read.
    """
    with transaction.atomic():
        closed = ToolCall.objects.filter(
            pk=call.pk, outcome__in=[ToolCall.Outcome.IN_PROGRESS, ToolCall.Outcome.SUCCEEDED],
        ).update(outcome=outcome, http_status=http_status, amount_cents=0, error=error[:500],
                 finished_at=timezone.now())
        if closed and call.payment_id:
            Payment.objects.filter(pk=call.payment_id, used_calls__gt=0).update(used_calls=F("used_calls") - 1)
    call.refresh_from_db()
    return bool(closed)

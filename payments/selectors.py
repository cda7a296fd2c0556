"""Reads of the payments app."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, F, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from catalog.models import Service
from payments import credentials
from payments.models import ApiKey, ApiKeyEvent, Payment, ToolCall, X402Authorization, cents_as_dollars


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


def payment_visible(payment_id: str, *, viewer: ApiKey | None) -> Payment | None:
    """The payment `viewer` may read or pay, or None, exactly as for an id that does not exist.

    A payment bound to a client is that client's alone: another key, or no
    key, is answered as if the id were unknown, so holding or guessing an id
    tells nothing about whether it exists. An unbound payment is anyone's who
    holds its id (128 random bits, shown only to whoever created or paid it).
    """
    payment = Payment.objects.select_related("service", "client").filter(pk=payment_id).first()
    if payment is None or payment.client_id is not None and payment.client_id != getattr(viewer, "pk", None):
        return None
    return payment


def x402_authorization_seen(*, payer: str, nonce: str) -> bool:
    """Whether this (payer, nonce) is already in the ledger (lower-case values)."""
    return X402Authorization.objects.filter(payer=payer, nonce=nonce).exists()


# Dashboard reads. Long lists page by keyset on (created_at, pk), newest first: no COUNT(*), no
# OFFSET, so the thousandth page costs what the first does.


@dataclass(frozen=True)
class Cursor:
    """Where a page of rows ordered by (created_at, pk) descending stops: the last row shown."""

    created_at: datetime
    pk: int | str

    def __str__(self) -> str:
        return f"{self.created_at.astimezone(UTC).isoformat()},{self.pk}"

    @classmethod
    def parse(cls, text: str, *, pk_type=str) -> "Cursor | None":
        """The cursor `str(cursor)` wrote, or None for anything else."""
        moment, comma, pk = text.partition(",")
        if not comma or not pk:
            return None
        try:
            created_at = datetime.fromisoformat(moment)
            pk = pk_type(pk)
            # An offset can push a date past datetime's range (0001-01-01T00:00+05:00).
            return cls(created_at.astimezone(UTC), pk) if created_at.tzinfo is not None else None
        except (ValueError, OverflowError):
            return None


@dataclass
class Page:
    rows: list
    older: Cursor | None  # where the next (older) page starts, if there is one


def keyset_page(queryset: QuerySet, before: Cursor | None, size: int) -> Page:
    """One page of rows newest first, (created_at, pk) after `before`: every dashboard list pages this way."""
    if before is not None:
        # The redundant created_at <= bound lets the database range-scan the index instead of filtering it.
        queryset = queryset.filter(Q(created_at__lt=before.created_at) | Q(created_at=before.created_at,
                                                                             pk__lt=before.pk),
                                   created_at__lte=before.created_at)
    rows = list(queryset.order_by("-created_at", "-pk")[:size + 1])
    older = Cursor(rows[size - 1].created_at, rows[size - 1].pk) if len(rows) > size else None
    return Page(rows[:size], older)


def api_keys_page(*, before: Cursor | None = None, size: int = 100) -> Page:
    """Keys newest first, with their creator and allow-list, in three queries whatever the page size."""
    queryset = ApiKey.objects.select_related("created_by").prefetch_related(
        Prefetch("allowed_services", queryset=Service.objects.only("pk").order_by("pk")))
    return keyset_page(queryset, before, size)


def api_key_for_dashboard(key_id: int) -> ApiKey | None:
    """One key with its creator and allow-list (two queries), or None."""
    return ApiKey.objects.select_related("created_by").prefetch_related(
        Prefetch("allowed_services", queryset=Service.objects.only("pk").order_by("pk"))).filter(pk=key_id).first()


def api_key_ids_for_client(client: str) -> list[int]:
    """The keys a ledger filter names: a client id (key_<prefix>) or a label (any case)."""
    if client.startswith("key_"):
        return list(ApiKey.objects.filter(prefix=client.removeprefix("key_")).values_list("pk", flat=True))
    return list(ApiKey.objects.filter(label__iexact=client).values_list("pk", flat=True))


@dataclass
class UsageDay:
    day: date
    calls: int = 0
    charged_cents: int = 0
    by_outcome: dict = field(default_factory=dict)
    outcome_counts: list = field(default_factory=list)  # aligned with ApiKeyUsage.outcomes

    @property
    def charged_dollars(self) -> str:
        return cents_as_dollars(self.charged_cents)


@dataclass
class ApiKeyUsage:
    since: date
    outcomes: list  # the outcomes seen in the window, as (value, label), in ToolCall.Outcome's order
    days: list  # UsageDay, newest first, only days with calls
    total: UsageDay


def api_key_usage(api_key: ApiKey, *, days: int = 30, now: datetime | None = None) -> ApiKeyUsage:
    """Calls per UTC day over the last `days` days (today included), by outcome, and what they charged.

    One aggregate query over the (api_key, started_at) index.
    """
    today = (now or timezone.now()).astimezone(UTC).date()
    since = today - timedelta(days=days - 1)
    rows = (ToolCall.objects.filter(api_key=api_key, started_at__gte=datetime.combine(since, time.min, tzinfo=UTC))
            .annotate(day=TruncDate("started_at", tzinfo=UTC)).values("day", "outcome")
            .annotate(calls=Count("pk"), charged=Sum("amount_cents")).order_by())
    per_day: dict[date, UsageDay] = {}
    total = UsageDay(day=today)
    for row in rows:
        day = per_day.setdefault(row["day"], UsageDay(day=row["day"]))
        for usage in (day, total):
            usage.calls += row["calls"]
            usage.charged_cents += row["charged"] or 0
            usage.by_outcome[row["outcome"]] = usage.by_outcome.get(row["outcome"], 0) + row["calls"]
    outcomes = [(value, label) for value, label in ToolCall.Outcome.choices if value in total.by_outcome]
    for usage in [*per_day.values(), total]:
        usage.outcome_counts = [usage.by_outcome.get(value, 0) for value, _ in outcomes]
    return ApiKeyUsage(since=since, outcomes=outcomes, days=sorted(per_day.values(), key=lambda d: d.day,
                                                                   reverse=True), total=total)


def api_key_payments_latest(api_key: ApiKey, *, size: int = 20) -> list[Payment]:
    return list(Payment.objects.filter(client=api_key).order_by("-created_at", "-pk")[:size])


def api_key_events(api_key: ApiKey, *, size: int = 100) -> list[ApiKeyEvent]:
    """The key's audit log, newest first."""
    return list(ApiKeyEvent.objects.filter(api_key=api_key).select_related("actor").order_by("-at", "-pk")[:size])


PAYMENT_STATES = ["pending", "paid", "exhausted", "expired"]
PAYMENT_METHODS = ["x402", "token", "balance"]


def _payment_state_filter(state: str, now: datetime) -> Q:
    """Payment.state() as a filter: expired wins over everything, exhausted is paid with no call left."""
    live = Q(expires_at__gt=now)
    return {
        "expired": Q(expires_at__lte=now),
        "pending": live & Q(status=Payment.Status.PENDING),
        "paid": live & Q(status=Payment.Status.PAID, used_calls__lt=F("max_calls")),
        "exhausted": live & Q(status=Payment.Status.PAID, used_calls__gte=F("max_calls")),
    }[state]


def _payment_method_filter(method: str) -> Q:
    """x402: paid (or being paid) by an x402 authorization, per call or for a token; balance: paid from a
    key's prepaid balance; token: bought through POST /api/payments and spent with its token, however paid.

    A token paid with x402 or from a balance is in two of these on purpose: each answers its own question.
    """
    return {
        "x402": Q(method=Payment.Method.X402),
        "balance": Q(method=Payment.Method.BALANCE),
        "token": Q(flow=Payment.Flow.TOKEN),
    }[method]


def payments_ledger(*, state: str | None = None, service_id: str | None = None, method: str | None = None,
                    client_ids: list[int] | None = None, created_from: date | None = None,
                    created_to: date | None = None, before: Cursor | None = None, size: int = 50,
                    now: datetime | None = None) -> Page:
    """Payments newest first under any of the filters; dates are UTC days, `created_to` included.

    Each filter is served by an index led by its column and followed by created_at.
    """
    now = now or timezone.now()
    queryset = Payment.objects.select_related("client")
    if state:
        queryset = queryset.filter(_payment_state_filter(state, now))
    if service_id:
        queryset = queryset.filter(service_id=service_id)
    if method:
        queryset = queryset.filter(_payment_method_filter(method))
    if client_ids is not None:
        queryset = queryset.filter(client_id__in=client_ids)
    if created_from:
        queryset = queryset.filter(created_at__gte=datetime.combine(created_from, time.min, tzinfo=UTC))
    if created_to:
        queryset = queryset.filter(created_at__lt=datetime.combine(created_to + timedelta(days=1), time.min,
                                                                   tzinfo=UTC))
    return keyset_page(queryset, before, size)


@dataclass
class PaymentDetail:
    payment: Payment
    calls: list  # newest first, at most `calls_shown`
    more_calls: bool
    receipts: list


def payment_detail(payment_id: str, *, calls_shown: int = 100) -> PaymentDetail | None:
    """A payment with its calls and its x402 receipts (three queries), or None."""
    payment = Payment.objects.select_related("client", "policy").filter(pk=payment_id).first()
    if payment is None:
        return None
    calls = list(payment.calls.order_by("-started_at", "-pk")[:calls_shown + 1])
    receipts = list(payment.x402_authorizations.order_by("-created_at", "-pk"))
    return PaymentDetail(payment, calls[:calls_shown], len(calls) > calls_shown, receipts)

"""API keys, payments (the legacy token flow) and the record of every paid call."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import PricingPolicy, Service


def cents_as_dollars(cents: int) -> str:
    """"12.30" for 1230: what the dashboard shows for an amount of cents."""
    return f"{Decimal(cents) / 100:.2f}"


class ApiKey(models.Model):
    """A client's credential. Only a hash of the secret is stored; `prefix` finds the row."""

    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    label = models.CharField(max_length=200)
    # Empty allow-list and allow_all_services: every service.
    allow_all_services = models.BooleanField(default=True)
    allowed_services = models.ManyToManyField(Service, blank=True, related_name="+")
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no limit.")
    daily_quota = models.PositiveIntegerField(null=True, blank=True, help_text="Calls per UTC day; empty: none.")
    balance_cents = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(balance_cents__gte=0), name="api_key_balance_not_negative")]
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.label} ({self.client_id})"

    @property
    def client_id(self) -> str:
        """The public name of the client this key stands for, as payments show it."""
        return f"key_{self.prefix}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def balance_dollars(self) -> str:
        return cents_as_dollars(self.balance_cents)


class ApiKeyEvent(models.Model):
    """One change to an API key: who, when, what. The key's audit log.

    Written by the api_key_* services in payments.services inside the
    transaction that makes the change, so no path (dashboard, command, shell)
    changes a key without its entry. `changes` never holds the secret or its
    hash: {field: [old, new]} for updates, the amount for top-ups, the first
    settings for a creation.
    """

    class Action(models.TextChoices):
        CREATED = "created", "created"
        UPDATED = "updated", "updated"
        TOPPED_UP = "topped_up", "topped up"
        REVOKED = "revoked", "revoked"
        ROTATED = "rotated", "secret rotated"

    # PROTECT: an audit log outlives nothing it describes; keys are revoked, not deleted.
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="events", db_index=False)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+", help_text="Empty: a management command or a script.")
    # Kept beside the foreign key so the log still says who after the user is deleted.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    changes = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["api_key", "at"])]
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.api_key_id} {self.action} {self.at:%Y-%m-%d %H:%M:%S}"

    @property
    def change_lines(self) -> list[str]:
        """What the entry records, one line per field, for people."""
        if self.action == self.Action.ROTATED:
            return ["new secret issued; the previous one no longer authenticates"]
        lines = []
        for name, value in self.changes.items():
            before_after = self.action in (self.Action.UPDATED, self.Action.REVOKED) or name == "balance_cents" \
                and self.action == self.Action.TOPPED_UP
            if before_after:
                shown = f"{_audit_value(name, value[0])} → {_audit_value(name, value[1])}"
            else:
                shown = _audit_value(name, value)
            lines.append(f"{_AUDIT_FIELDS.get(name, name.replace('_', ' '))}: {shown}")
        return lines


_AUDIT_FIELDS = {"allowed_services": "allow-list", "rate_limit_per_minute": "rate limit per minute",
                 "daily_quota": "daily quota", "balance_cents": "balance", "amount_cents": "amount"}


def _audit_value(name: str, value) -> str:
    if value is None:
        return "none"
    if name.endswith("_cents"):
        return f"{cents_as_dollars(value)} USD"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


class Payment(models.Model):
    """A purchase of `max_calls` calls of one service, paid once, spent through its token.

    The price and the rules are snapshots of the pricing policy at creation:
    editing a policy never changes a payment that exists.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PAID = "paid"

    class Method(models.TextChoices):
        NONE = "", "Not paid"
        BALANCE = "balance", "API key balance"
        X402 = "x402", "x402"

    class Flow(models.TextChoices):
        # Created by POST /api/payments; its calls are spent with X-Payment-Token.
        TOKEN = "token", "payment token"
        # Created by a tool call that carried PAYMENT-SIGNATURE: one call, paid as it is made.
        X402_CALL = "x402_call", "x402 per call"

    id = models.CharField(primary_key=True, max_length=40)
    # The (service, created_at) index below serves the foreign key's lookups too.
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="payments", db_index=False)
    policy = models.ForeignKey(PricingPolicy, null=True, on_delete=models.SET_NULL, related_name="payments")
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    billing_mode = models.CharField(max_length=20)
    max_calls = models.PositiveIntegerField()
    settle_mode = models.CharField(max_length=20)
    allow_reuse = models.BooleanField()
    bind_client = models.BooleanField()
    provider_id = models.CharField(max_length=64)
    provider = models.CharField(max_length=64)
    pay_to = models.CharField(max_length=64)
    # The (client, created_at) index below serves the foreign key's lookups too.
    client = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="payments",
                               db_index=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.NONE, blank=True)
    flow = models.CharField(max_length=10, choices=Flow.choices, default=Flow.TOKEN)
    used_calls = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            # The last line of defence for "N calls serve at most N results".
            models.CheckConstraint(condition=Q(used_calls__lte=F("max_calls")), name="payment_calls_within_max"),
        ]
        # The dashboard's ledger pages through (created_at, id) newest first, under any one filter.
        indexes = [
            models.Index(fields=["created_at", "id"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["client", "created_at"]),
            models.Index(fields=["service", "created_at"]),
            models.Index(fields=["method", "created_at"]),
            models.Index(fields=["flow", "created_at"]),
        ]
        ordering = ["-created_at"]

    def __str__(self):
        return self.id

    @property
    def amount_dollars(self) -> str:
        return cents_as_dollars(self.amount_cents)

    @property
    def method_summary(self) -> str:
        """How the payment is paid and spent, in the ledger's words."""
        if self.flow == self.Flow.X402_CALL:
            return "x402 (per call)"
        paid = {self.Method.BALANCE: "paid from balance", self.Method.X402: "paid with x402"}
        return f"token, {paid.get(self.method, 'unpaid')}"

    @property
    def remaining_calls(self) -> int:
        return self.max_calls - self.used_calls if self.status == self.Status.PAID else 0

    def state(self, now=None) -> str:
        """pending, paid, exhausted or expired, as the verify endpoint reports it."""
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        if self.status == self.Status.PAID and self.used_calls >= self.max_calls:
            return "exhausted"
        return self.status


class ToolCall(models.Model):
    """One paid call that reached the upstream: who, what, how it was paid, how it ended.

    Written before the upstream is called, so a call cut off midway (a worker
    killed, a connection lost) stays visible as `in_progress` and can be
    reconciled; calls refused before payment are not stored (see SPEC: 402s
    must not write rows for anonymous callers).
    """

    class Outcome(models.TextChoices):
        IN_PROGRESS = "in_progress"
        SUCCEEDED = "succeeded"
        CLIENT_ERROR = "client_error", "Refused by the upstream (caller's input)"
        UPSTREAM_ERROR = "upstream_error", "Upstream failure"
        TIMEOUT = "timeout"
        UNCONFIGURED = "unconfigured"
        SETTLEMENT_FAILED = "settlement_failed", "x402 settlement failed (result withheld)"
        ABANDONED = "abandoned", "Cut off midway and reconciled"

    class PaymentMethod(models.TextChoices):
        TOKEN = "token"
        X402 = "x402"

    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="calls")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls")
    client_id = models.CharField(max_length=64, blank=True)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="calls")
    payment_method = models.CharField(max_length=10, choices=PaymentMethod.choices)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.IN_PROGRESS)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    upstream_code = models.CharField(max_length=100, blank=True)
    upstream_request_id = models.CharField(max_length=100, blank=True)
    error = models.CharField(max_length=500, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    amount_cents = models.PositiveIntegerField(default=0, help_text="What the caller was charged for this call.")
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["service", "started_at"]),
            models.Index(fields=["api_key", "started_at"]),
            models.Index(fields=["outcome", "started_at"]),
        ]
        ordering = ["-started_at"]

    def __str__(self):
        return f"{self.service_id} {self.outcome} {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def amount_dollars(self) -> str:
        return cents_as_dollars(self.amount_cents)


class X402Authorization(models.Model):
    """One EIP-3009 authorization a payer presented, and what became of it: the x402 ledger.

    The unique (payer, nonce) pair is what makes an authorization pay for at
    most one call, however many processes see it at once: the second INSERT
    fails in the database. Rows are the receipts of x402 money and are kept;
    the constraint needs them at least until `valid_before` has passed, when
    the chain itself would refuse the authorization.
    """

    class Status(models.TextChoices):
        RESERVED = "reserved", "Verified, being used"
        SETTLED = "settled"
        UNSETTLED = "unsettled", "Not settled: the call yielded no result"
        FAILED = "failed", "Settlement refused"
        UNKNOWN = "unknown", "Settlement outcome unknown (facilitator did not answer)"

    payer = models.CharField(max_length=42, help_text="Lower-case address of the signer.")
    nonce = models.CharField(max_length=66, help_text="Lower-case 0x-prefixed 32-byte nonce.")
    network = models.CharField(max_length=40)
    asset = models.CharField(max_length=42)
    pay_to = models.CharField(max_length=42)
    amount = models.DecimalField(max_digits=40, decimal_places=0, help_text="Atomic units of the asset.")
    valid_after = models.DateTimeField()
    valid_before = models.DateTimeField()
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="x402_authorizations")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RESERVED)
    facilitator = models.CharField(max_length=200, help_text="sandbox, or the remote facilitator's URL.")
    transaction = models.CharField(max_length=100, blank=True)
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["payer", "nonce"], name="x402_authorization_used_once"),
            # A payment is paid once: a second authorization cannot be in flight or settled beside the first.
            models.UniqueConstraint(fields=["payment"], condition=Q(status__in=["reserved", "settled", "unknown"]),
                                    name="x402_one_live_authorization_per_payment"),
            # One transfer pays one payment, whatever a facilitator answers.
            models.UniqueConstraint(fields=["network", "transaction"], condition=Q(status="settled"),
                                    name="x402_transaction_settles_once"),
        ]
        indexes = [models.Index(fields=["status", "created_at"])]
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.payer} {self.nonce[:10]}... {self.status}"

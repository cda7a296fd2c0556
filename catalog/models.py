from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

SERVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,149}$"
# What may name a service in a URL: either id, or the MCP tool name (underscores).
SERVICE_REFERENCE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,149}$"
service_id_validator = RegexValidator(SERVICE_ID_PATTERN, "Use lower-case letters, digits and hyphens.")


class PricingPolicy(models.Model):
    """What one payment costs and what it buys; shared by many services.

    A payment copies the price when it is made, so editing a policy never
    changes a payment that already exists.
    """

    class BillingMode(models.TextChoices):
        PER_CALL = "per_call", "Per call"

    class SettleMode(models.TextChoices):
        # settle_first: the payment is settled before the upstream call, and a
        # failed call hands back a one-call retry token.
        SETTLE_FIRST = "settle_first", "Settle before the call"
        SETTLE_AFTER = "settle_after", "Settle after a successful call"

    id = models.SlugField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200, blank=True)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="USD")
    billing_mode = models.CharField(max_length=20, choices=BillingMode.choices, default=BillingMode.PER_CALL)
    max_calls = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    settle_mode = models.CharField(max_length=20, choices=SettleMode.choices, default=SettleMode.SETTLE_FIRST)
    allow_reuse = models.BooleanField(default=False, help_text="A token may pay for other services.")
    bind_client = models.BooleanField(default=True, help_text="A token is usable only by the client that bought it.")
    require_api_key = models.BooleanField(default=False)
    imported = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "pricing policies"
        ordering = ["id"]

    def __str__(self):
        return f"{self.id} ({self.price_label} {self.billing_mode})"

    @property
    def price_label(self) -> str:
        """"USD 0.20": how every page and answer writes the price."""
        return f"{self.currency} {self.amount_cents / 100:.2f}"


class Service(models.Model):
    """One upstream action sold as a paid tool."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    class Complexity(models.TextChoices):
        SIMPLE = "simple", "Simple"
        MODERATE = "moderate", "Moderate"
        COMPLEX = "complex", "Complex"

    class HttpMethod(models.TextChoices):
        GET = "GET", "GET"
        POST = "POST", "POST"

    id = models.CharField(primary_key=True, max_length=100, validators=[service_id_validator])
    internal_id = models.CharField(
        "legacy internal id", max_length=150, unique=True, validators=[service_id_validator]
    )
    name = models.CharField(max_length=200)
    description = models.TextField()
    description_for_model = models.TextField()
    category = models.SlugField(max_length=64, db_index=True)
    keywords = models.JSONField(default=list, blank=True)
    use_cases = models.JSONField(default=list, blank=True)
    limitations = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    input_schema = models.JSONField(default=dict)
    output_schema = models.JSONField(default=dict)
    example_request = models.JSONField(default=dict, blank=True)
    example_response = models.JSONField(default=dict, blank=True)
    error_examples = models.JSONField(default=list, blank=True)
    related_services = models.JSONField(default=list, blank=True)
    required_context = models.JSONField(default=list, blank=True)
    complexity = models.CharField(max_length=10, choices=Complexity.choices, default=Complexity.MODERATE)
    typical_response_ms = models.PositiveIntegerField(default=1200)
    cacheable = models.BooleanField(default=True)
    idempotent = models.BooleanField(default=True)
    output_format = models.CharField(max_length=20, default="json")
    sla_uptime = models.CharField(max_length=10, default="99.5%")
    sla_max_latency_ms = models.PositiveIntegerField(default=5000)

    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT, db_index=True)
    enabled = models.BooleanField(default=True)
    pricing_policy = models.ForeignKey(PricingPolicy, on_delete=models.PROTECT, related_name="services")
    payment_provider_id = models.CharField(max_length=64, default="x402-base-usdc")
    payment_provider = models.CharField(max_length=64, default="x402_facilitator")

    # The upstream binding: which Alibaba Cloud RPC action this service calls.
    upstream_product = models.SlugField(max_length=40)
    upstream_version = models.CharField(max_length=10)
    upstream_action = models.CharField(max_length=100)
    upstream_method = models.CharField(max_length=4, choices=HttpMethod.choices, default=HttpMethod.POST)
    # {"ImageURL": {"in": "body"}, "Tasks": {"in": "body", "style": "repeatList"}}
    upstream_parameters = models.JSONField(default=dict, blank=True)
    upstream_async = models.BooleanField(
        default=False, help_text="The action answers with a job to poll through GetAsyncJobResult."
    )

    # The values of the last import, field by field: a field whose current value
    # differs from its imported one was edited by an operator and is kept.
    imported = models.JSONField(default=dict, blank=True, editable=False)
    imported_from = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    # Opt-in: health runs send the example request and check the answer against the output schema.
    # In live mode that is a real, billed upstream call.
    health_full_check = models.BooleanField(
        "full health check", default=False,
        help_text="Health runs send the example request (a billed call in live mode) instead of the free probe.",
    )

    class Meta:
        # One action may be sold as several services (tiers with their own pricing); importing a
        # catalog still binds each action once (catalog.services.catalog_import).
        ordering = ["id"]

    def __str__(self):
        return self.id

    @property
    def tool_name(self) -> str:
        return self.id.replace("-", "_")

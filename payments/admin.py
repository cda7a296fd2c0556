from django.contrib import admin

from payments.models import ApiKey, ApiKeyEvent, Payment, ToolCall, X402Authorization


class _ReadOnly:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ApiKeyEventInline(_ReadOnly, admin.TabularInline):
    model = ApiKeyEvent
    fields = ["at", "actor_name", "action", "changes"]
    readonly_fields = fields
    ordering = ["-at", "-id"]
    extra = 0


@admin.register(ApiKey)
class ApiKeyAdmin(_ReadOnly, admin.ModelAdmin):
    """Read-only: keys change in the dashboard (or `manage.py create_api_key`), through the services
    that write each change to the key's audit log; an admin form would bypass it."""

    list_display = ["prefix", "label", "balance_cents", "rate_limit_per_minute", "daily_quota", "created_at",
                    "last_used_at", "revoked_at"]
    search_fields = ["prefix", "label"]
    # The secret exists only as a hash.
    readonly_fields = ["prefix", "secret_hash", "created_by", "created_at", "last_used_at"]
    inlines = [ApiKeyEventInline]


@admin.register(ApiKeyEvent)
class ApiKeyEventAdmin(_ReadOnly, admin.ModelAdmin):
    """The API keys' audit log, across keys."""

    list_display = ["at", "api_key", "actor_name", "action"]
    list_filter = ["action"]
    search_fields = ["api_key__prefix", "api_key__label", "actor_name"]
    list_select_related = ["api_key"]


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["id", "service", "status", "method", "amount_cents", "used_calls", "max_calls", "client",
                    "created_at", "expires_at"]
    list_filter = ["status", "method"]
    search_fields = ["id", "service__id"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ToolCall)
class ToolCallAdmin(admin.ModelAdmin):
    list_display = ["started_at", "service", "outcome", "http_status", "upstream_code", "latency_ms", "amount_cents",
                    "client_id", "payment"]
    list_filter = ["outcome", "payment_method"]
    search_fields = ["service__id", "upstream_request_id", "client_id"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(X402Authorization)
class X402AuthorizationAdmin(admin.ModelAdmin):
    """The x402 ledger: read-only, since its rows are what stop an authorization paying twice."""

    list_display = ["created_at", "payer", "status", "amount", "network", "transaction", "payment"]
    list_filter = ["status", "network"]
    search_fields = ["payer", "nonce", "transaction", "payment__id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

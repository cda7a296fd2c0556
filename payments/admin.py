from django.contrib import admin

from payments.models import ApiKey, Payment, ToolCall, X402Authorization


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "label", "balance_cents", "rate_limit_per_minute", "daily_quota", "created_at",
                    "last_used_at", "revoked_at"]
    search_fields = ["prefix", "label"]
    # The secret exists only as a hash; keys are created with `manage.py create_api_key` (shown once).
    readonly_fields = ["prefix", "secret_hash", "created_by", "created_at", "last_used_at"]
    filter_horizontal = ["allowed_services"]

    def has_add_permission(self, request):
        return False


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

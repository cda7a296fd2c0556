from django.contrib import admin

from catalog.models import PricingPolicy, Service


@admin.register(PricingPolicy)
class PricingPolicyAdmin(admin.ModelAdmin):
    list_display = ["id", "amount_cents", "currency", "billing_mode", "max_calls", "settle_mode", "bind_client"]


@admin.register(Service)
class ServiceAdmin(admin.ModelAdmin):
    list_display = ["id", "internal_id", "name", "category", "state", "enabled", "pricing_policy", "upstream_action"]
    list_filter = ["state", "enabled", "category", "upstream_product", "pricing_policy"]
    search_fields = ["id", "internal_id", "name", "upstream_action"]
    readonly_fields = ["imported_from", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["id", "internal_id", "name", "state", "enabled", "pricing_policy"]}),
        ("Descriptions", {"fields": ["description", "description_for_model", "category", "keywords", "use_cases",
                                     "limitations", "tags", "related_services", "required_context"]}),
        ("Schemas and examples", {"fields": ["input_schema", "output_schema", "example_request", "example_response",
                                             "error_examples"]}),
        ("Behaviour", {"fields": ["complexity", "typical_response_ms", "cacheable", "idempotent", "output_format",
                                  "sla_uptime", "sla_max_latency_ms", "payment_provider_id", "payment_provider",
                                  "health_full_check"]}),
        ("Upstream binding", {"fields": ["upstream_product", "upstream_version", "upstream_action", "upstream_method",
                                         "upstream_parameters", "upstream_async"]}),
        ("Provenance", {"fields": ["imported_from", "created_at", "updated_at"]}),
    ]

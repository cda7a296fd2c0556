from django.contrib import admin

from health.models import HealthCheckResult, HealthRun, ServiceHealth


class ReadOnlyAdmin(admin.ModelAdmin):
    """Health data is written by runs; the admin shows it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(HealthRun)
class HealthRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "trigger", "status", "done", "total", "concurrency", "created_at", "finished_at"]
    list_filter = ["status", "trigger"]


@admin.register(HealthCheckResult)
class HealthCheckResultAdmin(ReadOnlyAdmin):
    list_display = ["service", "status", "kind", "latency_ms", "http_status", "upstream_code", "checked_at"]
    list_filter = ["status", "kind"]
    search_fields = ["service__id", "upstream_code"]
    list_select_related = ["service"]
    show_full_result_count = False


@admin.register(ServiceHealth)
class ServiceHealthAdmin(ReadOnlyAdmin):
    list_display = ["service", "status", "latency_ms", "upstream_code", "checked_at"]
    list_filter = ["status"]

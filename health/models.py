"""Health-check runs and results, each service's latest health, and hourly statistics.

Results are the history (kept HEALTH_RESULT_RETENTION_DAYS). Pages and the
catalog never read them in bulk: they read ServiceHealth (one row per service)
and ServiceStatsHour (a few rows per service and hour), so a million stored
results cost the catalog nothing.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Service


class HealthStatus(models.TextChoices):
    HEALTHY = "healthy"
    DEGRADED = "degraded", "Degraded (slow or throttled)"
    UNHEALTHY = "unhealthy"
    UNCONFIGURED = "unconfigured", "Unconfigured (no upstream credentials)"
    UNKNOWN = "unknown"


class HealthRun(models.Model):
    """One pass over some services: who started it, how far it got, how it ended."""

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule"
        DASHBOARD = "dashboard"
        COMMAND = "command"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    service_ids = models.JSONField(default=list, help_text="The services to check, fixed when the run is created.")
    full = models.BooleanField(default=False, help_text="Full check for every service, not only those opted in.")
    concurrency = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written by the worker while it runs; a running run without a fresh one lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self):
        return f"health run {self.pk} ({self.status}, {self.done}/{self.total})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()


class HealthCheckResult(models.Model):
    """What one check of one service found."""

    class Kind(models.TextChoices):
        PROBE = "probe", "Free probe (a request without its required parameter)"
        FULL = "full", "Full check (the example request, answer validated)"

    run = models.ForeignKey(HealthRun, null=True, blank=True, on_delete=models.CASCADE, related_name="results")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="health_results")
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.PROBE)
    status = models.CharField(max_length=12, choices=HealthStatus.choices)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    upstream_code = models.CharField(max_length=100, blank=True)
    message = models.CharField(max_length=500, blank=True)
    upstream_request_id = models.CharField(max_length=100, blank=True)
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-checked_at"]
        indexes = [models.Index(fields=["service", "-checked_at"])]

    def __str__(self):
        return f"{self.service_id} {self.status} {self.checked_at:%Y-%m-%d %H:%M:%S}"


class ServiceHealth(models.Model):
    """A service's latest check and its last few statuses: what the catalog and pages read."""

    RECENT = 20

    service = models.OneToOneField(Service, primary_key=True, on_delete=models.CASCADE, related_name="health")
    status = models.CharField(max_length=12, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    kind = models.CharField(max_length=5, choices=HealthCheckResult.Kind.choices, default="probe")
    checked_at = models.DateTimeField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    upstream_code = models.CharField(max_length=100, blank=True)
    message = models.CharField(max_length=500, blank=True)
    # The last RECENT statuses, newest first: [[status, latency_ms or null], ...].
    recent = models.JSONField(default=list)

    class Meta:
        verbose_name_plural = "service health"

    def __str__(self):
        return f"{self.service_id} {self.status}"


class ServiceStatsHour(models.Model):
    """How many samples of one kind a service had in one hour: the source of every rate and percentile.

    A sample is a health check, a finished paid call or a 402 challenge. Latency
    is kept as a log-scale histogram (health.latency): one row per bucket that
    occurred, so an hour of a busy service is a few dozen rows whatever its volume.
    """

    class Source(models.TextChoices):
        CHECK = "check"
        CALL = "call"
        CHALLENGE = "challenge", "402 challenge"

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField()
    source = models.CharField(max_length=10, choices=Source.choices)
    # A health status for checks, a ToolCall outcome for calls, "payment_required" for challenges.
    outcome = models.CharField(max_length=20)
    # health.latency bucket; -1 when the sample has no latency.
    bucket = models.SmallIntegerField()
    # At or under the service's SLA maxLatency when it was recorded.
    within_sla = models.BooleanField()
    count = models.BigIntegerField(default=0)
    # What the calls counted here charged their callers, in cents: revenue without reading every call.
    amount_cents = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "hour", "source", "outcome", "bucket", "within_sla"],
                                    name="service_stats_hour_key"),
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self):
        return f"{self.service_id} {self.hour:%Y-%m-%d %H}h {self.source} {self.outcome} x{self.count}"

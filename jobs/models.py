"""Async jobs: a paid call accepted now (`Prefer: respond-async`) and made by a Celery worker."""

from django.db import models
from django.db.models import Q

from catalog.models import Service
from payments.models import ApiKey, ToolCall


class Job(models.Model):
    """One paid call made in the background, and its result for the owner to fetch.

    Created once the call is paid for (its token call taken, or its x402
    authorization verified and reserved), with the call's record already open.
    A worker holds it under a lease it renews as it goes; a job whose lease ran
    out lost its worker and is started again or failed (jobs.services.jobs_reap).
    The result is kept until `expires_at`, then the row is purged.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    id = models.CharField(primary_key=True, max_length=40)
    # SHA-256 of the job's own secret: whoever holds it may read the job, API key or not.
    secret_hash = models.CharField(max_length=64)
    service = models.ForeignKey(Service, on_delete=models.PROTECT, related_name="jobs", db_index=False)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
                                db_index=False)
    call = models.OneToOneField(ToolCall, on_delete=models.PROTECT, related_name="job")
    arguments = models.JSONField()
    # The x402 PaymentPayload and the requirements it was verified against, kept to settle the
    # authorization once there is a result; cleared when the job ends.
    x402_payload = models.JSONField(null=True, blank=True)
    x402_requirements = models.JSONField(null=True, blank=True)

    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times a worker started it.")
    # Set while a worker holds the job; a lease in the past means that worker is gone.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField()
    upstream_job_id = models.CharField(max_length=100, blank=True)
    upstream_status = models.CharField(max_length=30, blank=True)
    # Set when a worker first sends the upstream request: a retry must not repeat a call that changes data.
    upstream_sent_at = models.DateTimeField(null=True, blank=True)
    # Set when a worker starts settling the x402 payment: if it dies from then on, whether the money
    # moved is unknown and the authorization is left for the operator to reconcile.
    settling_started_at = models.DateTimeField(null=True, blank=True)

    http_status = models.PositiveSmallIntegerField(null=True, blank=True,
                                                   help_text="What a synchronous call would have answered.")
    # The seed 001 envelope when it succeeded; the error body when it failed.
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    charged = models.BooleanField(default=False)
    receipt = models.TextField(blank=True, help_text="The PAYMENT-RESPONSE of its x402 settlement.")

    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When the finished job is purged.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["succeeded", "failed"], finished_at__isnull=False, expires_at__isnull=False)
                | Q(status__in=["queued", "processing"], finished_at__isnull=True),
                name="job_finished_when_it_ends"),
        ]
        indexes = [
            # The dashboard's lists, per service and per key, newest first.
            models.Index(fields=["service", "created_at"]),
            models.Index(fields=["api_key", "created_at"]),
            models.Index(fields=["created_at", "id"]),
            # The reaper's and the purge's scans.
            models.Index(fields=["status", "lease_expires_at"]),
            models.Index(fields=["expires_at"]),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.id} {self.status}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

"""Celery tasks of async jobs: each takes an id (or nothing) and calls one function."""

from celery import shared_task

from jobs import services
from payments.pipeline import paid_job_run


@shared_task
def run_job(job_id: str) -> str | None:
    """Make one job's paid call. Not retried by Celery: a worker that dies leaves the job under a lease
    that runs out, and reap_stalled_jobs starts it again (or fails it, uncharged); a message delivered
    twice finds the job taken."""
    job = paid_job_run(job_id=job_id)
    return job.status if job is not None else None


@shared_task
def reap_stalled_jobs() -> dict[str, int]:
    """Every 30 s: start again (or fail) the jobs whose worker died, queue again those nobody took."""
    return services.jobs_reap()


@shared_task
def purge_expired_jobs() -> int:
    """Every 10 minutes: delete the jobs whose result expired (JOB_RESULT_TTL_SECONDS after they ended)."""
    return services.jobs_purge()

"""Dashboard pages of the jobs app: the jobs list (filtered, keyset pages) and one job.

Each view parses, calls one selector and renders its one template: the whole
page, or the list's partial when htmx asks. Nothing here writes.
"""

from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from jobs import selectors
from jobs.forms import JobFilterForm
from server402.operators import dashboard_view, page_or_partial


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def jobs_list(request):
    """Jobs newest first, filtered by service, API key and status; a bad filter is shown on the form, never a 500."""
    form = JobFilterForm(request.GET)
    page = selectors.jobs_dashboard_page(**form.filters()) if form.is_valid() else None
    return render(request, page_or_partial(request, "dashboard/jobs.html", "jobs-table"), {"form": form, "page": page})


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def job_detail(request, job_id):
    """A job: its arguments, result or error, timestamps and call; never its secret or its x402 payload."""
    detail = selectors.job_for_dashboard(job_id)
    if detail is None:
        raise Http404("No such job: it never existed, or its result expired and was purged.")
    return render(request, "dashboard/job.html", {"detail": detail, "job": detail.job})

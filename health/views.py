"""Dashboard pages of the health app: the overview, health runs, "check now"."""

from django.contrib import messages
from kombu.exceptions import OperationalError as KombuOperationalError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from catalog.models import Service
from health import selectors
from health.forms import HealthRunForm
from health.models import HealthRun, HealthStatus
from health.services import HealthRunRefused, health_run_start, service_check_now
from server402.operators import dashboard_view, page_or_partial


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def overview(request):
    published = Service.objects.filter(state=Service.State.PUBLISHED)
    if request.htmx and request.GET.get("part") == "run" and not request.htmx.history_restore_request:
        return render(request, "dashboard/overview.html#latest-run", {"run": selectors.health_run_latest()})
    context = {
        "traffic": selectors.traffic_totals(),
        "latency": selectors.latency_percentiles(),
        "status_counts": selectors.health_status_counts(services=published),
        "failing": selectors.failing_services(services=published),
        "run": selectors.health_run_latest(),
        "statuses": HealthStatus,
    }
    return render(request, "dashboard/overview.html", context)


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def health_runs(request):
    form = HealthRunForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            run = health_run_start(
                trigger=HealthRun.Trigger.DASHBOARD, started_by=request.user, full=form.cleaned_data["full"],
                service_ids=[service.id for service in form.cleaned_data["services"]] or None,
                concurrency=form.cleaned_data["concurrency"],
            )
        except HealthRunRefused as refusal:
            form.add_error(None, str(refusal))
        except (OSError, KombuOperationalError) as error:
            # The broker is unreachable: the run is already marked failed, the operator is told why.
            form.add_error(None, f"The run could not be queued ({error}); is the Celery worker's broker running?")
        else:
            return redirect("dashboard-health-run", run_id=run.pk)
    status = 400 if form.errors else 200
    return render(request, "dashboard/health_runs.html",
                  {"form": form, "runs": selectors.health_runs_recent()}, status=status)


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def health_run(request, run_id):
    run = get_object_or_404(HealthRun.objects.select_related("started_by"), pk=run_id)
    counts, results = selectors.health_run_results(run)
    return render(request, page_or_partial(request, "dashboard/health_run.html", "progress"),
                  {"run": run, "counts": counts, "results": results})


@dashboard_view
@require_POST
def service_check(request, service_id):
    service = get_object_or_404(Service, pk=service_id)
    result = service_check_now(service=service, started_by=request.user)
    if request.htmx:
        return render(request, "dashboard/service.html#health-panel",
                      {"service": service, "checked": result, **selectors.service_health_panel(service)})
    if result is not None:
        messages.info(request, f"Checked {service.id}: {result.status} ({result.message or 'no message'}).")
    return redirect("dashboard-service", service_id=service.id)

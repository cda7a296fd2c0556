import json
import re

from django.contrib import messages
from django.db import IntegrityError
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET, require_http_methods, require_safe
from django.views.decorators.vary import vary_on_headers

from catalog import selectors
from catalog.documents import absolute_url
from catalog.forms import PricingPolicyForm, ServiceFilterForm, ServiceForm
from catalog.models import SERVICE_REFERENCE_PATTERN, PricingPolicy, Service
from catalog.selectors import catalog_documents, catalog_listing, service_resolve
from catalog.services import pricing_policy_create, pricing_policy_update, service_update
from health.selectors import latency_by_hour, quality_blocks, service_health_panel
from jobs.selectors import jobs_recent
from payments.x402_discovery import x402_discovery_json
from server402.operators import dashboard_view, page_or_partial


def _pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@require_GET
def catalog_index(request):
    return render(request, "catalog/index.html", {"services": catalog_listing()})


@require_GET
@vary_on_headers("Accept")
def service_page(request, service_id, markdown=False):
    """One service for people (HTML) or agents (markdown, as in seed 000)."""
    service = service_resolve(service_id) if re.fullmatch(SERVICE_REFERENCE_PATTERN, service_id) else None
    if service is None:
        raise Http404(f"No published service {service_id!r}.")
    document = catalog_documents([service])[0]
    context = {
        "service": document,
        "links": {
            "endpoint": absolute_url(document["endpoint"]),
            "legacy_endpoint": absolute_url(document["legacyEndpoint"]),
            "page": absolute_url(f"/services/{service.id}"),
            "openapi": absolute_url("/openapi.json"),
            "search": absolute_url(f"/api/catalog/search?q={service.id}"),
            "mcp": absolute_url("/mcp"),
            "x402_discovery": absolute_url("/.well-known/x402"),
        },
        "price": service.pricing_policy.price_label,
        "schemas": {key: _pretty(document[key]) for key in
                    ("inputSchema", "outputSchema", "exampleRequest", "exampleResponse")},
    }
    if markdown or request.get_preferred_type(["text/html", "text/markdown"]) == "text/markdown":
        text = render_to_string("catalog/service_page.md", context, request)
        return HttpResponse(text, content_type="text/markdown; charset=utf-8")
    return render(request, "catalog/service_page.html", context)


@require_GET
def llms_txt(request):
    """The catalog for language models: https://llmstxt.org/ conventions."""
    text = render_to_string("catalog/llms.txt", {"services": catalog_listing(), "base": absolute_url("")}, request)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


# Seconds a client or shared cache may keep the discovery document. The 402 stays the authoritative
# offer, so a stale listing only means a changed price shows at the next 402; in exchange, crawlers
# polling the document need not reach the server each time.
X402_DISCOVERY_MAX_AGE = 300


@require_safe
@gzip_page  # about 360 KB of JSON (two listings of each tool) that compresses to about 25 KB
def x402_discovery(request):
    """`/.well-known/x402`: every published, enabled tool with the accepts[] its 402 offers."""
    response = HttpResponse(x402_discovery_json(), content_type="application/json")
    # The same public document for everyone, so browser-based x402 explorers may read it too.
    response["Access-Control-Allow-Origin"] = "*"
    patch_cache_control(response, public=True, max_age=X402_DISCOVERY_MAX_AGE)
    return response


# --- Dashboard ---------------------------------------------------------------------


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def dashboard_services(request):
    """The services table: search as you type, filters, health, quality parts, latency sparkline, price."""
    form = ServiceFilterForm(request.GET, categories=selectors.dashboard_categories())
    filters = form.cleaned_data if form.is_valid() else {}
    services = selectors.dashboard_services(**{key: value for key, value in filters.items() if value})
    ids = [service.id for service in services]
    qualities = quality_blocks(services)
    sparklines = latency_by_hour(ids)
    rows = [{"service": service, "quality": qualities[service.id], "sparkline": sparklines[service.id]}
            for service in services]
    return render(request, page_or_partial(request, "dashboard/services.html", "results"),
                  {"form": form, "rows": rows}, status=200 if form.is_valid() else 400)


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def dashboard_service(request, service_id):
    """A service: its definition (editable), schemas, health history with "check now", recent calls and jobs."""
    service = get_object_or_404(Service.objects.select_related("pricing_policy"), pk=service_id)
    form = ServiceForm(request.POST if request.method == "POST" else None, instance=service)
    if request.method == "POST":
        if form.is_valid():
            changed = service_update(service=service, **{name: form.cleaned_data[name] for name in form.fields})
            messages.success(request, f"Saved {', '.join(changed)}." if changed else "Nothing changed.")
            return redirect("dashboard-service", service_id=service.id)
        service.refresh_from_db()
    context = {
        "service": service,
        "form": form,
        "schemas": {"input": _pretty(service.input_schema), "output": _pretty(service.output_schema)},
        "calls": selectors.service_recent_calls(service),
        "jobs": jobs_recent(service=service),
        **service_health_panel(service),
    }
    return render(request, "dashboard/service.html", context, status=400 if form.errors else 200)


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def pricing_policies(request):
    return render(request, "dashboard/pricing.html", {"policies": selectors.pricing_policies_with_services()})


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def pricing_policy_new(request):
    form = PricingPolicyForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        try:
            policy = pricing_policy_create(amount_cents=form.amount_cents, **fields)
        except IntegrityError:
            form.add_error("id", "A pricing policy with this id was just created.")
        else:
            messages.success(request, f"Created pricing policy {policy.id}.")
            return redirect("dashboard-pricing-policy", policy_id=policy.id)
    return render(request, "dashboard/pricing_policy.html", {"form": form, "policy": None},
                  status=400 if form.errors else 200)


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def pricing_policy_edit(request, policy_id):
    policy = get_object_or_404(PricingPolicy, pk=policy_id)
    form = PricingPolicyForm(request.POST if request.method == "POST" else None, instance=policy)
    if request.method == "POST":
        if form.is_valid():
            fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.fields}
            changed = pricing_policy_update(policy=policy, amount_cents=form.amount_cents, **fields)
            messages.success(request, f"Saved {', '.join(changed)}; existing payments keep their price."
                             if changed else "Nothing changed.")
            return redirect("dashboard-pricing-policy", policy_id=policy.id)
        policy.refresh_from_db()
    context = {"form": form, "policy": policy, "services": policy.services.order_by("id"),
               "payment_count": selectors.pricing_policy_payment_count(policy)}
    return render(request, "dashboard/pricing_policy.html", context, status=400 if form.errors else 200)

import json
import re

from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from catalog.documents import absolute_url
from catalog.models import SERVICE_REFERENCE_PATTERN
from catalog.selectors import catalog_documents, catalog_listing, service_resolve


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

"""A service as agents see it: seed 001's catalog entry, field for field.

Everything that can be derived (endpoints, tool name, input and output types,
the discovery block) is derived here from the stored definition, so the
database holds each fact once.
"""

from django.conf import settings

from catalog.languages import has_cjk
from catalog.models import Service
from payments.instructions import payment_flow


def _unique(items):
    return list(dict.fromkeys(items))


def schema_types(schema: dict) -> list[str]:
    """Seed 001's inputTypes/outputTypes: "object", then the property types, sorted, "uri" among them."""
    types = set()
    for prop in (schema.get("properties") or {}).values():
        kinds = prop.get("type", [])
        types.update([kinds] if isinstance(kinds, str) else kinds)
        if prop.get("format") == "uri":
            types.add("uri")
    types.discard("object")
    return ["object", *sorted(types)]


def pricing_block(service: Service) -> dict:
    policy = service.pricing_policy
    return {
        "amountCents": policy.amount_cents,
        "currency": policy.currency,
        "policyId": policy.id,
        "settleMode": policy.settle_mode,
        "billingMode": policy.billing_mode,
        "maxCalls": policy.max_calls,
        "allowReuse": policy.allow_reuse,
        "bindClient": policy.bind_client,
    }


def price_sentence(service: Service) -> str:
    return f"Price is {service.pricing_policy.price_label} per policy {service.pricing_policy.id}."


def endpoints(service: Service) -> dict:
    return {
        "endpoint": f"/api/tools/{service.id}",
        "legacyEndpoint": f"/api/tools/{service.internal_id}",
    }


def _discovery(service: Service, document: dict, flow: dict) -> dict:
    words = [
        document["id"], document["name"], document["description"], document["descriptionForModel"],
        document["category"], *document["inputTypes"], *document["outputTypes"], *document["tags"],
        *document["keywords"], *document["useCases"], *document["limitations"], document["endpoint"],
    ]
    aliases = _unique(
        [document["name"], document["category"], *document["tags"], *document["keywords"],
         service.id, service.tool_name, document["endpoint"]]
    )
    return {
        "toolName": service.tool_name,
        "searchText": " ".join(words),
        "aliases": aliases,
        "localeHints": ["en", "zh"] if any(has_cjk(k) for k in document["keywords"]) else ["en"],
        "useCases": document["useCases"],
        "limitations": document["limitations"],
        "paymentFlow": flow,
        "paymentHint": f"Call POST {document['endpoint']} once to receive HTTP 402 with accepts[] requirements, "
        f'or create a payment with POST /api/payments using serviceId="{service.id}". '
        "Pay Base USDC with PAYMENT-SIGNATURE, then retry the same request.",
        "retryHint": "If the service returns HTTP 402, pay one accepts[] requirement, then retry with "
        "PAYMENT-SIGNATURE for Base USDC, or X-Payment-Token: payment.token for legacy token flow.",
        "requiredState": "published, enabled",
    }


def service_document(service: Service, *, flow: dict | None = None) -> dict:
    """The catalog entry of one service, without its quality block and match fields.

    `flow` lets a caller building many documents share one payment-flow dict.
    """
    paths = endpoints(service)
    document = {
        "id": service.id,
        "canonicalId": service.id,
        "internalServiceId": service.internal_id,
        "name": service.name,
        "description": service.description,
        "descriptionForModel": service.description_for_model,
        "category": service.category,
        "keywords": service.keywords,
        "useCases": service.use_cases,
        "limitations": service.limitations,
        "tags": service.tags,
        "method": "POST",
        **paths,
        "endpointAliases": list(paths.values()),
        "inputTypes": schema_types(service.input_schema),
        "outputTypes": schema_types(service.output_schema),
        "inputSchema": service.input_schema,
        "outputSchema": service.output_schema,
        "exampleRequest": service.example_request,
        "exampleResponse": service.example_response,
        "pricing": pricing_block(service),
        "payment": {"providerId": service.payment_provider_id, "provider": service.payment_provider},
        # Filled by health.selectors from stored checks and calls; kept here for seed 001's key order.
        "quality": None,
    }
    document["discovery"] = _discovery(service, document, flow or payment_flow())
    document.update(
        {
            "complexity": service.complexity,
            "typicalResponseTime": f"{service.typical_response_ms}ms",
            "cacheable": service.cacheable,
            "idempotent": service.idempotent,
            "outputFormat": service.output_format,
            "relatedServices": service.related_services,
            "requiredContext": service.required_context,
            "errorExamples": service.error_examples,
            "sla": {"uptime": service.sla_uptime, "maxLatency": f"{service.sla_max_latency_ms}ms"},
        }
    )
    return document


def absolute_url(path: str) -> str:
    return f"{settings.PUBLIC_BASE_URL}{path}"

"""Catalog files in seed 001's shape, read into service specs.

A file is either a catalog search response (`{"services": [...]}`, like seed
001) or a bare list of entries. Entries may carry two keys that seed 001 does
not show: `state`/`enabled`, and `upstream` (the binding to an Alibaba Cloud
action). Without `upstream`, the binding is read from the legacy id
(`aliyun-<product>-<action>`) and the entry's first keyword, the action name.
"""

import re

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from catalog.aliyun_metadata import PRODUCTS, kebab

_ID = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,99}$"}
_TEXT_LIST = {"type": "array", "items": {"type": "string"}}
_MS = {"type": "string", "pattern": r"^\d+ms$"}

ENTRY_SCHEMA = {
    "type": "object",
    "required": ["id", "internalServiceId", "name", "description", "category", "inputSchema", "pricing"],
    "properties": {
        "id": _ID,
        "internalServiceId": {**_ID, "maxLength": 150},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "minLength": 1},
        "descriptionForModel": {"type": "string"},
        "category": {"type": "string", "pattern": r"^[a-z0-9-]{1,64}$"},
        "keywords": _TEXT_LIST,
        "useCases": _TEXT_LIST,
        "limitations": _TEXT_LIST,
        "tags": _TEXT_LIST,
        "inputSchema": {"type": "object"},
        "outputSchema": {"type": "object"},
        "exampleRequest": {"type": "object"},
        "exampleResponse": {"type": "object"},
        "errorExamples": {"type": "array", "items": {"type": "object"}},
        "relatedServices": {"type": "array", "items": _ID},
        "requiredContext": _TEXT_LIST,
        "complexity": {"enum": ["simple", "moderate", "complex"]},
        "typicalResponseTime": _MS,
        "cacheable": {"type": "boolean"},
        "idempotent": {"type": "boolean"},
        "outputFormat": {"type": "string"},
        "sla": {
            "type": "object",
            "properties": {"uptime": {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}, "maxLatency": _MS},
        },
        "state": {"enum": ["draft", "published"]},
        "enabled": {"type": "boolean"},
        "pricing": {
            "type": "object",
            "required": ["policyId", "amountCents"],
            "properties": {
                "policyId": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"},
                "amountCents": {"type": "integer", "minimum": 0},
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                "billingMode": {"enum": ["per_call"]},
                "maxCalls": {"type": "integer", "minimum": 1},
                "settleMode": {"enum": ["settle_first", "settle_after"]},
                "allowReuse": {"type": "boolean"},
                "bindClient": {"type": "boolean"},
            },
        },
        "payment": {
            "type": "object",
            "properties": {"providerId": {"type": "string"}, "provider": {"type": "string"}},
        },
        "upstream": {
            "type": "object",
            "required": ["product", "version", "action"],
            "properties": {
                "product": {"type": "string", "pattern": r"^[a-z0-9]+$"},
                "version": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                "action": {"type": "string", "pattern": r"^[A-Za-z0-9]+$"},
                "method": {"enum": ["GET", "POST"]},
                "parameters": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["in"],
                        "properties": {"in": {"enum": ["query", "body"]},
                                       "style": {"enum": ["flat", "repeatList", "json"]}},
                    },
                },
                "async": {"type": "boolean"},
            },
        },
    },
}
_VALIDATOR = Draft202012Validator(ENTRY_SCHEMA)


class CatalogFileError(ValueError):
    """A catalog entry that cannot be imported; `field` is its JSON path."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _path(prefix: str, parts) -> str:
    text = prefix
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _ms(value: str | None, default: int) -> int:
    return int(value.removesuffix("ms")) if value else default


def _binding(entry: dict, where: str) -> dict:
    upstream = entry.get("upstream")
    if upstream is None:
        match = re.fullmatch(r"aliyun-([a-z0-9]+)-(.+)", entry["internalServiceId"])
        action = next((k for k in entry.get("keywords", []) if re.fullmatch(r"[A-Z][A-Za-z0-9]+", k)), None)
        if not match or match.group(1) not in PRODUCTS or not action or kebab(action) != match.group(2):
            raise CatalogFileError(
                f"{where}.upstream",
                "is missing and cannot be read from internalServiceId and the action keyword",
            )
        upstream = {"product": match.group(1), "version": PRODUCTS[match.group(1)].version, "action": action}
    method = upstream.get("method", "POST")
    parameters = upstream.get("parameters") or {
        name: {"in": "query" if method == "GET" else "body"} for name in entry["inputSchema"].get("properties", {})
    }
    return {
        "upstream_product": upstream["product"],
        "upstream_version": upstream["version"],
        "upstream_action": upstream["action"],
        "upstream_method": method,
        "upstream_parameters": parameters,
        "upstream_async": upstream.get("async", False),
    }


def _state(entry: dict) -> tuple[str, bool]:
    required_state = (entry.get("discovery") or {}).get("requiredState", "")
    state = entry.get("state") or ("published" if "published" in required_state else "draft")
    enabled = entry.get("enabled", True)
    return state, enabled


def entry_spec(entry: dict, where: str) -> dict:
    """One seed-shaped entry as a service spec, or CatalogFileError naming the field."""
    error = next(iter(sorted(_VALIDATOR.iter_errors(entry), key=lambda e: list(e.absolute_path))), None)
    if error is not None:
        raise CatalogFileError(_path(where, error.absolute_path), error.message)
    for key in ("inputSchema", "outputSchema"):
        try:
            Draft202012Validator.check_schema(entry.get(key, {}))
        except SchemaError as problem:
            raise CatalogFileError(_path(f"{where}.{key}", problem.absolute_path), problem.message) from None
    pricing, payment, sla = entry["pricing"], entry.get("payment") or {}, entry.get("sla") or {}
    state, enabled = _state(entry)
    return {
        "id": entry["id"],
        "internal_id": entry["internalServiceId"],
        "name": entry["name"],
        "description": entry["description"],
        "description_for_model": entry.get("descriptionForModel") or entry["description"],
        "category": entry["category"],
        "keywords": entry.get("keywords", []),
        "use_cases": entry.get("useCases", []),
        "limitations": entry.get("limitations", []),
        "tags": entry.get("tags", []),
        "input_schema": entry["inputSchema"],
        "output_schema": entry.get("outputSchema", {}),
        "example_request": entry.get("exampleRequest", {}),
        "example_response": entry.get("exampleResponse", {}),
        "error_examples": entry.get("errorExamples", []),
        "related_services": entry.get("relatedServices", []),
        "required_context": entry.get("requiredContext", []),
        "complexity": entry.get("complexity", "moderate"),
        "typical_response_ms": _ms(entry.get("typicalResponseTime"), 1200),
        "cacheable": entry.get("cacheable", True),
        "idempotent": entry.get("idempotent", True),
        "output_format": entry.get("outputFormat", "json"),
        "sla_uptime": sla.get("uptime", "99.5%"),
        "sla_max_latency_ms": _ms(sla.get("maxLatency"), 5000),
        "state": state,
        "enabled": enabled,
        "payment_provider_id": payment.get("providerId", "x402-base-usdc"),
        "payment_provider": payment.get("provider", "x402_facilitator"),
        "pricing_policy": {
            "id": pricing["policyId"],
            "amount_cents": pricing["amountCents"],
            "currency": pricing.get("currency", "USD"),
            "billing_mode": pricing.get("billingMode", "per_call"),
            "max_calls": pricing.get("maxCalls", 1),
            "settle_mode": pricing.get("settleMode", "settle_first"),
            "allow_reuse": pricing.get("allowReuse", False),
            "bind_client": pricing.get("bindClient", True),
        },
        **_binding(entry, where),
    }


def catalog_specs(document) -> list[dict]:
    """Every entry of a seed-shaped catalog document as specs."""
    if isinstance(document, dict) and isinstance(document.get("services"), list):
        entries, prefix = document["services"], "services"
    elif isinstance(document, list):
        entries, prefix = document, ""
    else:
        raise CatalogFileError("services", "a catalog file needs a `services` list (or is a list of entries)")
    return [entry_spec(entry, f"{prefix}[{index}]") if isinstance(entry, dict) else
            _not_an_object(f"{prefix}[{index}]") for index, entry in enumerate(entries)]


def _not_an_object(where: str):
    raise CatalogFileError(where, "must be an object")

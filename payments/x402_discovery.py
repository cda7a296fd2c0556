"""`/.well-known/x402`: every paid tool, for x402 discovery clients, in one document.

There is no merged x402 standard for an origin's own discovery document, so the
document is the union of the two shapes that real clients read, each ignoring
the other's keys:

- x402scan's fan-out (its docs/DISCOVERY.md, read by x402scan and by
  `@agentcash/discovery`): `{version: 1, resources: [url, ...], instructions}`.
  The clients probe each URL for its 402, which stays the authoritative offer.
- the bazaar's discovery list, as a facilitator answers `GET /discovery/resources`
  (the SDK's `x402.extensions.bazaar.DiscoveryResource`): `{x402Version, items,
  pagination}`, each item a resource with its `accepts[]`, service metadata and
  `extensions.bazaar`. Every tool is listed twice: as its HTTP endpoint
  (`type: "http"`) and as its MCP tool (`type: "mcp"`, resource = the MCP
  endpoint, told apart by `extensions.bazaar.info.input.toolName`, as the bazaar
  spec keys MCP tools by (resource, tool)).

Built from rows and settings only, through the same functions as the 402
(payments.challenge), so the document cannot offer what the 402 does not. Like
/openapi.json and the MCP tool list, each process keeps the encoded document
until the catalog version or a setting it prints changes.
"""

import json
import threading
from collections.abc import Iterable

from django.conf import settings
from x402.extensions.bazaar import DiscoveryResource
from x402.schemas import X402_VERSION, PaymentRequirements

from catalog.documents import absolute_url
from catalog.models import Service
from catalog.selectors import catalog_snapshot
from payments.challenge import mcp_bazaar_extension, x402_payment_required
from payments.instructions import MCP_PAYMENT

# x402scan's discovery document version; the bazaar list carries x402Version beside it.
DISCOVERY_DOCUMENT_VERSION = 1
MCP_PATH = "/mcp"


def mcp_endpoint() -> str:
    return absolute_url(MCP_PATH)


def _last_updated(service: Service) -> str:
    # A price change is a change of the listed resource too: its accepts[] changed.
    changed = max(service.updated_at, service.pricing_policy.updated_at)
    return changed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _wire(requirements: list[PaymentRequirements]) -> list[dict]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in requirements]


def discovery_resources(service: Service) -> list[dict]:
    """The tool's two bazaar discovery items, HTTP then MCP, each with the accepts[] its 402 offers."""
    required = x402_payment_required(service)
    resource = required.resource
    accepts = _wire(required.accepts)
    common = {
        "x402_version": required.x402_version,
        "accepts": accepts,
        "last_updated": _last_updated(service),
        "description": resource.description,
        "mime_type": resource.mime_type,
        "service_name": resource.service_name,
        "tags": resource.tags,
    }
    http = DiscoveryResource(resource=resource.url, type="http", extensions=required.extensions, **common)
    mcp = DiscoveryResource(resource=mcp_endpoint(), type="mcp", extensions=mcp_bazaar_extension(service), **common)
    return [http.to_dict(), mcp.to_dict()]


def _instructions() -> str:
    base = settings.PUBLIC_BASE_URL
    return (
        "Server402 sells single calls of Alibaba Cloud visual-AI tools. "
        f"HTTP: POST {base}/api/tools/<serviceId> with the tool's JSON arguments; an unpaid call answers "
        "402 with accepts[] (x402 v2, USDC on Base) in its body and the PAYMENT-REQUIRED header. Pay one "
        "requirement and retry with PAYMENT-SIGNATURE, or buy a token with POST "
        f"{base}/api/payments and retry with X-Payment-Token. "
        f"MCP (Streamable HTTP): {base}{MCP_PATH}; each tool is named by its service id with '_' for '-' "
        f"(celebrity-recognition is celebrity_recognition) and search_services is free. {MCP_PAYMENT} "
        f"OpenAPI: {base}/openapi.json. Search: {base}/api/catalog/search?q=. For language models: {base}/llms.txt."
    )


def x402_discovery_document(services: Iterable[Service]) -> dict:
    """The `/.well-known/x402` document of `services` (the callable ones, pricing policies joined)."""
    items = []
    resources = []
    for service in services:
        http, mcp = discovery_resources(service)
        items += [http, mcp]
        # x402scan registers only URLs whose 402 can be paid in x402; a token-only price has no accepts[].
        if http["accepts"]:
            resources.append(http["resource"])
    return {
        "version": DISCOVERY_DOCUMENT_VERSION,
        "resources": resources,
        "instructions": _instructions(),
        "x402Version": X402_VERSION,
        "items": items,
        # The whole list in one page: a client of the facilitator API reads it the same way.
        "pagination": {"limit": len(items), "offset": 0, "total": len(items)},
    }


def _settings_printed() -> tuple:
    # Every setting the document shows: the base of its URLs and the x402 terms of its accepts[].
    return (settings.PUBLIC_BASE_URL, settings.X402_NETWORK, settings.X402_ASSET, settings.X402_PAY_TO,
            settings.X402_MAX_TIMEOUT_SECONDS, tuple(settings.X402_ASSET_DOMAIN.items()))


_lock = threading.Lock()
_cached: tuple[tuple, bytes] | None = None


def x402_discovery_json() -> bytes:
    """The document of every callable tool as JSON, built again only when the catalog or its settings changed.

    One query when nothing changed (the catalog version), two when it did (the services too).
    """
    global _cached
    version, services = catalog_snapshot()
    key = (version, _settings_printed())
    with _lock:
        if _cached is None or _cached[0] != key:
            document = x402_discovery_document(sorted(services.values(), key=lambda service: service.id))
            _cached = (key, json.dumps(document, ensure_ascii=False).encode())
        return _cached[1]

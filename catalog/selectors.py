"""Reads of the catalog."""

import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.db.models import Count, Max, Q
from rapidfuzz import process

from catalog.documents import price_sentence, service_document
from catalog.models import Service
from catalog.search import SearchIndex, entry_for
from health.selectors import quality_blocks
from payments.instructions import payment_flow, payment_guide

SEARCH_SCHEMA_VERSION = "server402.catalog.search.v1"
_BEIJING = ZoneInfo("Asia/Shanghai")


def callable_services():
    """What agents may see and call: published and enabled."""
    return Service.objects.filter(state=Service.State.PUBLISHED, enabled=True).select_related("pricing_policy")


def service_resolve(reference: str, *, callable_only: bool = True) -> Service | None:
    """A service by canonical id, legacy internal id or MCP tool name."""
    queryset = callable_services() if callable_only else Service.objects.select_related("pricing_policy")
    return queryset.filter(
        Q(id=reference) | Q(internal_id=reference) | Q(id=reference.replace("_", "-"))
    ).first()


def closest_service_ids(reference: str, *, limit: int = 3) -> list[str]:
    """Canonical ids that look most like `reference` (either id form), for 404 answers."""
    pairs = list(callable_services().values_list("id", "internal_id"))
    names = {name: service_id for service_id, internal_id in pairs for name in (service_id, internal_id)}
    found = process.extract(reference.lower(), list(names), limit=limit * 2, score_cutoff=50)
    return list(dict.fromkeys(names[name] for name, _, _ in found))[:limit]


def catalog_documents(services) -> list[dict]:
    """Seed 001 entries, each with its quality block."""
    services = list(services)
    flow = payment_flow()
    qualities = quality_blocks([s.id for s in services])
    documents = []
    for service in services:
        document = service_document(service, flow=flow)
        document["quality"] = qualities[service.id]
        documents.append(document)
    return documents


class _IndexCache:
    """The search index of this process, rebuilt when the catalog's version changes.

    The version (row count and newest update) comes from one indexed query per
    search, so every process sees an edit made by any other at its next search.
    Writes go through Model.save() (services, admin, dashboard), which stamps
    updated_at; a bare QuerySet.update() would not be seen.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._version = None
        self._index = None
        self._services: dict[str, Service] = {}

    def get(self) -> tuple[SearchIndex, dict[str, Service]]:
        version = tuple(Service.objects.aggregate(n=Count("id"), latest=Max("updated_at")).values())
        with self._lock:
            if version != self._version:
                services = list(callable_services())
                self._index = SearchIndex([entry_for(s) for s in services])
                self._services = {s.id: s for s in services}
                self._version = version
            return self._index, self._services


_index_cache = _IndexCache()


def catalog_categories() -> frozenset[str]:
    return _index_cache.get()[0].categories


def catalog_search(*, query: str, limit: int, category: str | None = None) -> dict:
    """The answer of GET /api/catalog/search, in seed 001's shape."""
    index, services = _index_cache.get()
    if query.strip():
        hits = index.search(query, category=category)
    else:
        hits = [_Browse(s.id) for s in services.values() if category in (None, s.category)]
    chosen = hits[:limit]
    documents = catalog_documents(services[hit.service_id] for hit in chosen)
    for hit, document in zip(chosen, documents):
        service = services[hit.service_id]
        document["matchScore"] = hit.match_score
        document["matchTerms"] = hit.match_terms
        document["why"] = (
            f'Matched {", ".join(hit.match_terms)} for "{service.name}". {price_sentence(service)}'
            if hit.match_terms else f'Listed without a query. {price_sentence(service)}'
        )
    now = datetime.now(UTC)
    filters = {"limit": limit, **({"category": category} if category else {})}
    return {
        "schemaVersion": SEARCH_SCHEMA_VERSION,
        "generatedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        # Alibaba Cloud's region keeps Beijing time; seed 001 shows both.
        "generatedAtBeijing": now.astimezone(_BEIJING).strftime("%Y-%m-%d %H:%M:%S CST"),
        "timezone": "Asia/Shanghai",
        "query": query,
        "filters": filters,
        "total": len(hits),
        "services": documents,
        "payment": payment_guide(),
    }


class _Browse:
    """A listing without a query: every service, no match."""

    match_score = 0
    match_terms: list[str] = []

    def __init__(self, service_id: str):
        self.service_id = service_id

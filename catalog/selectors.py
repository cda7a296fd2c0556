"""Reads of the catalog."""

import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.db.models import Count, Max, Q, Subquery
from rapidfuzz import process

from catalog.documents import price_sentence, service_document
from catalog.models import PricingPolicy, Service
from catalog.search import Hit, SearchIndex, entry_for
from health.selectors import HEALTH_RANK, health_statuses, quality_blocks
from payments.instructions import payment_flow, payment_guide
from payments.models import ToolCall

SEARCH_SCHEMA_VERSION = "server402.catalog.search.v1"
_BEIJING = ZoneInfo("Asia/Shanghai")


def callable_services():
    """What agents may see and call: published and enabled."""
    return Service.objects.filter(state=Service.State.PUBLISHED, enabled=True).select_related("pricing_policy")


def catalog_listing():
    """Callable services grouped for pages: by category, then id."""
    return callable_services().order_by("category", "id")


def service_resolve(reference: str) -> Service | None:
    """A callable service by canonical id, legacy internal id or MCP tool name."""
    return callable_services().filter(
        Q(id=reference) | Q(internal_id=reference) | Q(id=reference.replace("_", "-"))
    ).first()


def service_lookup(reference: str) -> Service | None:
    """Any service by canonical id, legacy internal id or MCP tool name, whatever its state."""
    return Service.objects.select_related("pricing_policy").filter(
        Q(id=reference) | Q(internal_id=reference) | Q(id=reference.replace("_", "-"))
    ).first()


def closest_service_ids(reference: str, *, limit: int = 3) -> list[str]:
    """Canonical ids that look most like `reference` (either id form), for 404 answers."""
    pairs = list(callable_services().values_list("id", "internal_id"))
    names = {name: service_id for service_id, internal_id in pairs for name in (service_id, internal_id)}
    found = process.extract(reference.lower(), list(names), limit=limit * 2, score_cutoff=50)
    return list(dict.fromkeys(names[name] for name, _, _ in found))[:limit]


def catalog_documents(services, *, flow: dict | None = None) -> list[dict]:
    """Seed 001 entries, each with its quality block."""
    services = list(services)
    flow = flow or payment_flow()
    qualities = quality_blocks(services)
    documents = []
    for service in services:
        document = service_document(service, flow=flow)
        document["quality"] = qualities[service.id]
        documents.append(document)
    return documents


class _IndexCache:
    """The search index of this process and the rows it ranks, rebuilt when the catalog changes.

    The version (service count, newest service and newest pricing-policy edit)
    comes from one query per search, so every process sees an edit made by any
    other at its next search, and a price is never stale. Writes go through
    Model.save() (services, admin, dashboard), which stamps updated_at; a bare
    QuerySet.update() would not be seen.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._version = None
        self._index = None
        self._services: dict[str, Service] = {}

    def get(self) -> tuple[SearchIndex, dict[str, Service]]:
        return self.snapshot()[1:]

    def snapshot(self) -> tuple[tuple, SearchIndex, dict[str, Service]]:
        newest_policy = PricingPolicy.objects.order_by("-updated_at").values("updated_at")[:1]
        version = tuple(Service.objects.aggregate(
            n=Count("id"), latest=Max("updated_at"), policy=Max(Subquery(newest_policy))).values())
        with self._lock:
            if version != self._version:
                services = list(callable_services())
                self._index = SearchIndex([entry_for(s) for s in services])
                self._services = {s.id: s for s in services}
                self._version = version
            return self._version, self._index, self._services


_index_cache = _IndexCache()


def catalog_snapshot() -> tuple[tuple, dict[str, Service]]:
    """The callable services by id, with the catalog version they were read at (it changes with any edit)."""
    version, _, services = _index_cache.snapshot()
    return version, services


def search_categories() -> frozenset[str]:
    """The categories agents can search in."""
    return _index_cache.get()[0].categories


def service_categories(*, state: str) -> set[str]:
    return set(Service.objects.filter(state=state).values_list("category", flat=True).distinct())


def service_list(*, state: str, category: str | None, offset: int, limit: int) -> tuple[int, list[Service]]:
    services = Service.objects.filter(state=state).select_related("pricing_policy")
    if category:
        services = services.filter(category=category)
    return services.count(), list(services[offset:offset + limit])


def catalog_search(*, query: str, limit: int, category: str | None = None) -> dict:
    """The answer of GET /api/catalog/search, in seed 001's shape."""
    index, rows = _index_cache.get()
    if query.strip():
        hits = index.search(query, category=category)
    else:
        hits = [Hit(e.service_id, 0.0) for e in index.entries if category in (None, e.category)]
    # Quality breaks ties: among equal matchScores, services that work now come first.
    statuses = health_statuses([hit.service_id for hit in hits])
    hits.sort(key=lambda hit: (-hit.match_score, HEALTH_RANK[statuses[hit.service_id]], -hit.score, hit.service_id))
    chosen = hits[:limit]
    flow = payment_flow()
    documents = catalog_documents((rows[hit.service_id] for hit in chosen), flow=flow)
    for hit, document in zip(chosen, documents, strict=True):
        service = rows[hit.service_id]
        document["matchScore"] = hit.match_score
        document["matchTerms"] = hit.match_terms
        document["why"] = (
            f'Matched {", ".join(hit.match_terms)} for "{service.name}". {price_sentence(service)}'
            if hit.match_terms else f"Listed without a query. {price_sentence(service)}"
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
        "payment": payment_guide(flow),
    }


# --- Dashboard reads -------------------------------------------------------------


def dashboard_services(*, q: str = "", category: str = "", state: str = "", health: str = "") -> list[Service]:
    """Every service (drafts too) matching the filters; `q` matches ids, name, category and keywords.

    The catalog is tens to a few thousand rows, so the text match runs over the
    filtered rows in Python: the same on every database, keywords included.
    """
    services = Service.objects.select_related("pricing_policy").order_by("category", "id")
    if category:
        services = services.filter(category=category)
    if state:
        services = services.filter(state=state)
    if health == "unknown":
        services = services.filter(Q(health__isnull=True) | Q(health__status="unknown"))
    elif health:
        services = services.filter(health__status=health)
    words = q.lower().split()
    if not words:
        return list(services)

    def text(service: Service) -> str:
        return " ".join([service.id, service.internal_id, service.name.lower(), service.category,
                         service.upstream_action.lower(), *(str(k).lower() for k in service.keywords)])

    return [service for service in services if all(word in text(service) for word in words)]


def dashboard_categories() -> list[str]:
    return list(Service.objects.order_by("category").values_list("category", flat=True).distinct())


def service_recent_calls(service: Service, *, limit: int = 20):
    """The service's latest paid calls, newest first, through the (service, started_at) index."""
    return list(ToolCall.objects.filter(service=service).select_related("api_key").order_by("-started_at")[:limit])


def pricing_policies_with_services() -> list[PricingPolicy]:
    """Every policy with the ids of the services that use it (two queries)."""
    policies = list(PricingPolicy.objects.order_by("id"))
    using: dict[str, list[str]] = {}
    for policy_id, service_id in Service.objects.order_by("id").values_list("pricing_policy_id", "id"):
        using.setdefault(policy_id, []).append(service_id)
    for policy in policies:
        policy.service_ids = using.get(policy.id, [])
    return policies


PAYMENT_COUNT_CAP = 1000


def pricing_policy_payment_count(policy: PricingPolicy) -> int:
    """How many payments were made under the policy, counted up to PAYMENT_COUNT_CAP + 1.

    Capped so the page costs the same with a million payments: past the cap it says "more than".
    """
    return policy.payments.values("pk")[:PAYMENT_COUNT_CAP + 1].count()

"""Server402 benchmarks: `make bench`.

Each figure is measured beside a baseline in the same run and reported as a
ratio too. See bench/README.md for what is measured and the recorded figures.

`bench/run.py` runs every bench, in order; `bench/run.py NAME ...` only those
named (`--help` lists them).
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")
os.environ.setdefault("SERVER402_ENV_FILE", "")
os.environ.setdefault("SECRET_KEY", "bench-only-not-a-secret")
# A database of its own, unless DATABASE_URL points at one (then its test database is used).
_workdir = tempfile.mkdtemp(prefix="server402-bench-")
os.environ.setdefault("SERVER402_VAR_DIR", _workdir)

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.models import Q  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from catalog.models import Service  # noqa: E402
from catalog.selectors import catalog_search  # noqa: E402
from catalog.services import REFERENCE_CATALOG, catalog_import  # noqa: E402

import catalog_history  # noqa: E402
import dashboard_pages  # noqa: E402
import health_runs  # noqa: E402
import jobs_throughput  # noqa: E402
import load  # noqa: E402
import mcp_throughput  # noqa: E402
import paid_call  # noqa: E402  (bench/paid_call.py, beside this file)
import x402_throughput  # noqa: E402

QUERIES = [case["query"] for case in json.loads((ROOT / "tests/catalog/judged_queries.json").read_text())]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return cuts[49], cuts[94]


def timed(function, queries) -> list[float]:
    samples = []
    for _ in range(ROUNDS):
        for query in queries:
            start = time.perf_counter()
            function(query)
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def naive_search(query: str) -> list[str]:
    """The baseline: what a first version would do, a LIKE per word over the main text fields."""
    condition = Q()
    for word in query.split():
        condition |= Q(name__icontains=word) | Q(keywords__icontains=word) | Q(description__icontains=word)
    return list(Service.objects.filter(condition, state="published", enabled=True).values_list("id", flat=True)[:10])


def add_synthetic_services(total: int) -> None:
    """Clone the reference services with new ids and shuffled wording until `total` exist."""
    rng = random.Random(402)
    templates = list(Service.objects.all())
    words = sorted({w for s in templates for k in s.keywords for w in k.split()})
    batch, count = [], Service.objects.count()
    while count < total:
        template = templates[count % len(templates)]
        clone = Service(**{f.attname: getattr(template, f.attname) for f in Service._meta.concrete_fields})
        clone.id = f"{template.id}-{count}"
        clone.internal_id = f"{template.internal_id}-{count}"
        clone.upstream_action = f"{template.upstream_action}{count}"
        clone.keywords = [*rng.sample(template.keywords, k=min(5, len(template.keywords))), *rng.sample(words, 4)]
        clone.name = f"{template.name} {rng.choice(words)}"
        batch.append(clone)
        count += 1
        if len(batch) == 1000:
            Service.objects.bulk_create(batch)
            batch = []
    Service.objects.bulk_create(batch)


def measure(label: str, rows: list) -> None:
    client = Client()
    start = time.perf_counter()
    catalog_search(query="warm up", limit=10)
    build_ms = (time.perf_counter() - start) * 1000
    ours = timed(lambda q: catalog_search(query=q, limit=10), QUERIES)
    api = timed(lambda q: client.get("/api/catalog/search", {"q": q, "limit": 10}), QUERIES)
    base = timed(naive_search, QUERIES)
    for name, samples in [("catalog_search()", ours), ("GET /api/catalog/search", api),
                          ("baseline: LIKE per word", base)]:
        p50, p95 = percentiles(samples)
        rows.append((label, name, p50, p95, percentiles(base)[0]))
    rows.append((label, "index (re)build, once per catalog change", build_ms, build_ms, None))


def search() -> None:
    """Catalog search: the reference catalog, then 10,000 services (README: "Catalog search")."""
    # create_test_db() returns the test database's name; destroy_test_db() restores the one given.
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        catalog_import(paths=[REFERENCE_CATALOG])
        rows: list = []
        measure(f"{Service.objects.count()} services", rows)
        add_synthetic_services(10_000)
        measure(f"{Service.objects.count()} services", rows)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    engine = connection.vendor
    print(f"\nCatalog search latency ({engine}, {len(QUERIES)} judged queries x {ROUNDS} rounds, limit 10)\n")
    print("| catalog | what | p50 ms | p95 ms | p50 vs baseline |")
    print("|---|---|---:|---:|---:|")
    for label, name, p50, p95, base_p50 in rows:
        ratio = f"{p50 / base_p50:.2f}x" if base_p50 else ""
        print(f"| {label} | {name} | {p50:.2f} | {p95:.2f} | {ratio} |")


# In the order `make bench` runs them; each is a section of bench/README.md.
BENCHES = {
    "search": (search, "catalog search latency, 62 and 10,000 services (BENCH_ROUNDS)"),
    "paid_call": (paid_call.main, "paid call overhead through gunicorn (BENCH_CALLS, BENCH_PROFILE)"),
    "mcp": (mcp_throughput.main, "MCP tools/list and token-paid tools/call per second against their HTTP twins "
            "(BENCH_MCP_CONNECTIONS, BENCH_MCP_ROUNDS, BENCH_MCP_SECONDS, BENCH_PROFILE)"),
    "health_runs": (health_runs.main, "a health run over 1,000 services (BENCH_HEALTH_SERVICES)"),
    "catalog_history": (catalog_history.main, "catalog with 1,000,000 stored results (BENCH_HISTORY_RESULTS)"),
    "dashboard_pages": (dashboard_pages.main, "overview and services pages with 1,000,000 results and calls "
                        "(BENCH_DASHBOARD_RESULTS, BENCH_DASHBOARD_CALLS, BENCH_DASHBOARD_REQUESTS)"),
    "x402_throughput": (x402_throughput.main, "x402 throughput against the SDK's servers "
                        "(needs bench/requirements.txt)"),
    "jobs": (jobs_throughput.main, "async jobs submitted and completed per s by two Celery workers, against "
             "synchronous paid calls (BENCH_JOBS, BENCH_JOBS_ASYNC, BENCH_JOBS_SEQUENTIAL, BENCH_JOBS_CONCURRENCY, "
             "BENCH_JOBS_POOL, BENCH_JOBS_ONE_WORKER)"),
    "load": (load.main, "the paid token call at rising concurrency against its upstream alone, gunicorn in its "
             "production configuration (BENCH_LOAD_SECONDS, BENCH_LOAD_LEVELS, BENCH_LOAD_WARM_UP_SECONDS, "
             "BENCH_LOAD_TOKENS, BENCH_LOAD_PROFILE, BENCH_LOAD_PROFILE_SECONDS, BENCH_LOAD_COMPARE, "
             "BENCH_LOAD_COMPARE_ROUND_SECONDS)"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Server402 benchmarks (bench/README.md). SQLite by default; the test database of "
                    "DATABASE_URL when set.",
        epilog="benches, in the order they run:\n" + "\n".join(f"  {name:17} {what}" for name, (_, what)
                                                                  in BENCHES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="*", metavar="NAME", help="run only these (default: all)")
    chosen = parser.parse_args(argv).benches
    if unknown := [name for name in chosen if name not in BENCHES]:
        parser.error(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    setup_test_environment()
    for name, (bench, _) in BENCHES.items():
        if not chosen or name in chosen:
            bench()


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(_workdir, ignore_errors=True)

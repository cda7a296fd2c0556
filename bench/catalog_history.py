"""Catalog latency as health history grows: empty, one day, then 30 days with 1,000,000 stored results.

Part of `make bench` (bench/run.py calls main()); see bench/README.md, "Catalog and health history".

On a throwaway test database (paid_call.test_database: SQLite under
SERVER402_VAR_DIR, or `test_<name>` of DATABASE_URL) holding the reference
catalog (62 services), the same requests are timed three times:

1. empty history: no results, no hourly statistics, no latest health;
2. one day: the newest 26 hours of the history below (the quality window is
   the current hour and the 23 before it; two hours spare in case the clock
   passes an hour during the bench), and each service's latest health;
3. 30 days: the 29 older days added, BENCH_HISTORY_RESULTS (default
   1,000,000) HealthCheckResult rows in all.

The history (bench/synthetic_history.py, shared with bench/dashboard_pages.py):
results spread evenly over 30 days across the 62 services (a
check of each service every 2.7 minutes; 96% healthy, 2% degraded, 2%
unhealthy, latencies log-normal), and BENCH_HISTORY_CALLS (default 1,000,000)
paid calls, each after a 402, as the hourly statistics that record_* would
have written for them: one ServiceStatsHour row per service, hour, source,
outcome, latency bucket and within-SLA flag, counted here, not upserted one
by one. Call records (ToolCall) are not inserted: nothing on these paths
reads them. Rows go in with executemany in chunks (SQLite) or COPY
(PostgreSQL, then ANALYZE, as autovacuum would).

Timed, BENCH_HISTORY_ROUNDS rounds (default 3), median per request:
catalog_search(query, limit=20) over the judged queries; the catalog listing
catalog_search(query="", limit=62); quality_blocks() of the 62 services; the
service page GET /services/<id> (Django's test client) of each service.
Ratios: 30 days over empty, and 30 days over one day (1.00x: history costs
nothing). Also the SQL statements of one search, one listing and one page,
and the plan of the ServiceStatsHour read.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/catalog_history.py`.
"""

import json
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

import paid_call  # noqa: E402  (bench/, beside this file)
import synthetic_history  # noqa: E402  (bench/, beside this file)
from catalog.models import Service  # noqa: E402
from catalog.selectors import catalog_search  # noqa: E402
from health.models import HealthCheckResult, ServiceHealth, ServiceStatsHour  # noqa: E402
from health.selectors import quality_blocks, window_start  # noqa: E402

QUERIES = [case["query"] for case in json.loads((ROOT / "tests/catalog/judged_queries.json").read_text())]
RESULTS = int(os.environ.get("BENCH_HISTORY_RESULTS", "1000000"))
CALLS = int(os.environ.get("BENCH_HISTORY_CALLS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_HISTORY_ROUNDS", "3"))
RECENT_HOURS = 26
REPEATS = 10  # listing and quality_blocks: per round
STATES = ("empty history", "one day", "30 days")


# --- Measures ------------------------------------------------------------------


def timed(function, arguments, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        for argument in arguments:
            start = time.perf_counter()
            function(argument)
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def measure(services: list[Service], client: Client) -> dict[str, list[float]]:
    def page(service_id: str) -> None:
        response = client.get(f"/services/{service_id}")
        assert response.status_code == 200, (service_id, response.status_code)

    def listing(_) -> None:
        answer = catalog_search(query="", limit=len(services))
        assert len(answer["services"]) == len(services)

    catalog_search(query="warm up", limit=20)
    ids = [service.id for service in services]
    return {
        "catalog_search(), judged queries, limit 20": timed(lambda q: catalog_search(query=q, limit=20), QUERIES,
                                                            ROUNDS),
        f"catalog listing: empty query, limit {len(services)}": timed(listing, range(REPEATS), ROUNDS),
        f"quality_blocks() of the {len(services)} services": timed(lambda _: quality_blocks(services),
                                                                   range(REPEATS), ROUNDS),
        "GET /services/<id>, each service": timed(page, ids, ROUNDS),
    }


def statements(services: list[Service], client: Client) -> dict[str, list[str]]:
    found = {}
    for label, call in (("search", lambda: catalog_search(query="人脸识别", limit=20)),
                        ("listing", lambda: catalog_search(query="", limit=len(services))),
                        ("page", lambda: client.get(f"/services/{services[0].id}"))):
        with CaptureQueriesContext(connection) as queries:
            call()
        found[label] = [query["sql"] for query in queries]
    return found


def stats_plan(services: list[Service]) -> list[str]:
    """The plan of the ServiceStatsHour read that quality_blocks() makes, as the app sends it."""
    caught = []

    def catch(execute, sql, params, many, context):
        if ServiceStatsHour._meta.db_table in sql:
            caught.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(catch):
        quality_blocks(services)
    sql, params = caught[0]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}", params)
            return [row[0] for row in cursor.fetchall()]
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return [row[-1] for row in cursor.fetchall()]


def scan_ms() -> float:
    """For scale: one pass over every stored result (what the catalog never does)."""
    start = time.perf_counter()
    list(HealthCheckResult.objects.values_list("status").annotate(n=Count("id")))
    return (time.perf_counter() - start) * 1000


def stored(now: datetime) -> dict:
    return {"results": HealthCheckResult.objects.count(), "hourly rows": ServiceStatsHour.objects.count(),
            "hourly rows in the window": ServiceStatsHour.objects.filter(hour__gte=window_start(now)).count(),
            "latest health rows": ServiceHealth.objects.count()}


def main() -> None:
    started = time.monotonic()
    with paid_call.test_database("bench-catalog-history.sqlite3"):
        services = list(Service.objects.filter(state=Service.State.PUBLISHED, enabled=True)
                        .select_related("pricing_policy"))
        client = Client()
        history = synthetic_history.History(services, datetime.now(UTC), results=RESULTS, calls=CALLS,
                                            recent_hours=RECENT_HOURS)
        samples, sizes, loads, plans = {}, {}, {}, {}
        for state in STATES:
            if state != STATES[0]:
                load_start = time.perf_counter()
                history.stage(recent=state == STATES[1])
                synthetic_history.analyze(HealthCheckResult, ServiceStatsHour, ServiceHealth)
                loads[state] = time.perf_counter() - load_start
            sizes[state] = stored(datetime.now(UTC))
            problems = history.problems(final=state == STATES[-1])
            if problems:
                raise SystemExit(f"catalog history bench, {state}: {'; '.join(problems)}")
            samples[state] = measure(services, client)
            if state != STATES[0]:
                plans[state] = stats_plan(services)
        queries = statements(services, client)
        scan = scan_ms()
    report(samples, sizes, loads, queries, plans, scan, time.monotonic() - started)


def report(samples: dict, sizes: dict, loads: dict, queries: dict, plans: dict[str, list[str]], scan: float,
           seconds: float) -> None:
    engine = connection.vendor
    print(f"\nCatalog and health history ({engine}; median ms per request, {ROUNDS} rounds)\n")
    first, day, full = STATES
    print(f"| what | {first} | {day} | {full} | {full} vs {first} | {full} vs {day} |")
    print("|---|---:|---:|---:|---:|---:|")
    for what in samples[first]:
        p50 = {state: statistics.median(samples[state][what]) for state in STATES}
        print(f"| {what} | {p50[first]:.2f} | {p50[day]:.2f} | {p50[full]:.2f} | {p50[full] / p50[first]:.2f}x "
              f"| {p50[full] / p50[day]:.2f}x |")
    print("\n| history | results | hourly rows | of them in the 24 h window | latest health rows | load s |")
    print("|---|---:|---:|---:|---:|---:|")
    for state in STATES:
        size = sizes[state]
        load = f"{loads[state]:.1f}" if state in loads else ""
        print(f"| {state} | {size['results']:,} | {size['hourly rows']:,} | {size['hourly rows in the window']:,} "
              f"| {size['latest health rows']} | {load} |")
    print(f"\nFor scale: one pass over the {sizes[full]['results']:,} results (GROUP BY status) takes {scan:.0f} ms.")
    for label, sqls in queries.items():
        print(f"\nSQL statements of one {label} (30 days of history): {len(sqls)}")
        for sql in sqls:
            print(f"  {sql[:150]}")
    for state, plan in plans.items():
        print(f"\nPlan of quality_blocks()' ServiceStatsHour read, {state} ({engine}):")
        for line in plan:
            # PostgreSQL spells out the 62 ids of the IN list; they say nothing about the plan.
            print(f"  {line if len(line) < 200 else line[:150] + ' ...'}")
    print(f"\nthis section took {seconds:.0f} s (test database, catalog and history load included)")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

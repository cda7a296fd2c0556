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

The history: results spread evenly over 30 days across the 62 services (a
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
import math
import os
import random
import statistics
import time
from collections import Counter, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.db import connection, transaction  # noqa: E402
from django.db.models import Count, Sum  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

import paid_call  # noqa: E402  (bench/, beside this file)
from catalog.models import Service  # noqa: E402
from catalog.selectors import catalog_search  # noqa: E402
from health import latency  # noqa: E402
from health.models import HealthCheckResult, ServiceHealth, ServiceStatsHour  # noqa: E402
from health.selectors import quality_blocks, window_start  # noqa: E402

QUERIES = [case["query"] for case in json.loads((ROOT / "tests/catalog/judged_queries.json").read_text())]
RESULTS = int(os.environ.get("BENCH_HISTORY_RESULTS", "1000000"))
CALLS = int(os.environ.get("BENCH_HISTORY_CALLS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_HISTORY_ROUNDS", "3"))
DAYS = 30
RECENT_HOURS = 26
CHUNK = 20_000
REPEATS = 10  # listing and quality_blocks: per round
STATES = ("empty history", "one day", "30 days")


# --- The history -------------------------------------------------------------


class History:
    """Deterministic samples over DAYS days ending now, written in two stages split at an hour."""

    def __init__(self, services: list[Service], now: datetime):
        self.services = services
        self.now = now
        self.start = now - timedelta(days=DAYS)
        self.split = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=RECENT_HOURS - 1)
        self.result_step = (now - self.start) / RESULTS
        self.call_step = (now - self.start) / CALLS
        self.to_db = connection.ops.adapt_datetimefield_value
        rng = random.Random(402)
        weights = [1 / (rank + 1) ** 0.8 for rank in range(len(services))]
        rng.shuffle(weights)
        self.call_weights = weights

    def first_index(self, step: timedelta) -> int:
        """The first sample (results or calls) at or after the split."""
        return max(0, math.ceil((self.split - self.start) / step - 0.5))

    def stage(self, recent: bool) -> tuple[int, int]:
        """Rows written: (results, hourly rows)."""
        first_result, first_call = self.first_index(self.result_step), self.first_index(self.call_step)
        results = range(first_result, RESULTS) if recent else range(first_result)
        calls = range(first_call, CALLS) if recent else range(first_call)
        latest: dict[str, deque] = {s.id: deque(maxlen=ServiceHealth.RECENT) for s in self.services}
        written = rows_insert(HealthCheckResult, RESULT_COLUMNS, self.results(results, latest))
        hourly = rows_insert(ServiceStatsHour, STATS_COLUMNS, self.stats(results, calls))
        if recent:
            health_insert(latest)
        return written, hourly

    def results(self, indexes: range, latest: dict):
        rng = random.Random(indexes.start + 1)
        services = self.services
        for i in indexes:
            service = services[i % len(services)]
            at = self.start + (i + 0.5) * self.result_step
            status, latency_ms, http_status, code, message = check_sample(rng, service)
            latest[service.id].append((status, latency_ms, http_status, code, message, at))
            yield (service.id, "probe", status, latency_ms, http_status, code, message, f"BENCH-{i:08X}",
                   self.to_db(at))

    def stats(self, results: range, calls: range):
        """The hourly rows of those results and calls, hour by hour (both are in time order).

        The checks are drawn again from the seed results() used, so the rows count exactly the stored results.
        """
        rng = random.Random(results.start + 1)
        services = self.services
        counts: Counter = Counter()
        hour = None
        for i in results:
            service = services[i % len(services)]
            at = self.start + (i + 0.5) * self.result_step
            if hour != (current := at.replace(minute=0, second=0, microsecond=0)):
                yield from self.flush(counts)
                hour = current
            status, latency_ms, *_ = check_sample(rng, service)
            counts[service, hour, "check", status, latency.bucket(latency_ms),
                   latency_ms is not None and latency_ms <= service.sla_max_latency_ms] += 1
        yield from self.flush(counts)
        rng = random.Random(calls.start + 3)
        hour = None
        for j in calls:
            at = self.start + (j + 0.5) * self.call_step
            if hour != (current := at.replace(minute=0, second=0, microsecond=0)):
                yield from self.flush(counts)
                hour = current
            service = rng.choices(services, self.call_weights)[0]
            outcome, latency_ms = call_sample(rng, service)
            counts[service, hour, "call", outcome, latency.bucket(latency_ms),
                   latency_ms is not None and latency_ms <= service.sla_max_latency_ms] += 1
            counts[service, hour, "challenge", "payment_required", latency.NO_LATENCY, False] += 1
        yield from self.flush(counts)

    def flush(self, counts: Counter):
        for (service, hour, source, outcome, bucket, within_sla), n in counts.items():
            yield service.id, self.to_db(hour), source, outcome, bucket, within_sla, n
        counts.clear()


def check_sample(rng: random.Random, service: Service) -> tuple:
    """(status, latency_ms, http_status, upstream_code, message) of one free probe."""
    roll = rng.random()
    if roll < 0.02:
        latency_ms = round(rng.lognormvariate(math.log(300), 0.5))
        return ("unhealthy", latency_ms, 500, "InternalError",
                "the upstream failed with HTTP 500: InternalError: The request processing has failed")
    if roll < 0.04:
        latency_ms = service.sla_max_latency_ms + round(rng.expovariate(1 / 1000)) + 1
        message = (f"answered with its parameter error MissingImageURL in {latency_ms} ms; "
                   f"slower than the SLA's {service.sla_max_latency_ms} ms")
        return "degraded", latency_ms, 400, "MissingImageURL", message
    latency_ms = round(rng.lognormvariate(math.log(150), 0.35))
    return ("healthy", latency_ms, 400, "MissingImageURL",
            f"answered with its parameter error MissingImageURL in {latency_ms} ms")


def call_sample(rng: random.Random, service: Service) -> tuple[str, int]:
    """(outcome, latency_ms) of one finished paid call."""
    roll = rng.random()
    typical = service.typical_response_ms or 1200
    if roll < 0.93:
        return "succeeded", round(rng.lognormvariate(math.log(typical), 0.35))
    if roll < 0.97:
        return "client_error", round(rng.lognormvariate(math.log(typical / 3), 0.35))
    if roll < 0.99:
        return "upstream_error", round(rng.lognormvariate(math.log(typical), 0.5))
    return "timeout", 10_000


RESULT_COLUMNS = ("service_id", "kind", "status", "latency_ms", "http_status", "upstream_code", "message",
                  "upstream_request_id", "checked_at")
STATS_COLUMNS = ("service_id", "hour", "source", "outcome", "bucket", "within_sla", "count")


def rows_insert(model, columns: tuple[str, ...], rows) -> int:
    """Bulk rows, in chunks: executemany on SQLite, COPY on PostgreSQL."""
    table, written = model._meta.db_table, 0
    if connection.vendor == "postgresql":
        copy_sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        return written
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, chunk)
            written += len(chunk)
            chunk = []
    if chunk:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, chunk)
        written += len(chunk)
    return written


def health_insert(latest: dict[str, deque]) -> None:
    """Each service's latest health, as health_result_record leaves it."""
    rows = []
    for service_id, samples in latest.items():
        if not samples:
            continue
        status, latency_ms, http_status, code, message, at = samples[-1]
        rows.append(ServiceHealth(service_id=service_id, status=status, kind="probe", checked_at=at,
                                  latency_ms=latency_ms, http_status=http_status, upstream_code=code,
                                  message=message, recent=[[s[0], s[1]] for s in reversed(samples)]))
    ServiceHealth.objects.bulk_create(rows)


def analyze() -> None:
    """PostgreSQL: fresh planner statistics, as autovacuum would have after such a load."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE health_healthcheckresult, health_servicestatshour, health_servicehealth")


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
    samples = dict(ServiceStatsHour.objects.values_list("source").annotate(n=Sum("count")))
    return {"results": HealthCheckResult.objects.count(), "hourly rows": ServiceStatsHour.objects.count(),
            "hourly rows in the window": ServiceStatsHour.objects.filter(hour__gte=window_start(now)).count(),
            "latest health rows": ServiceHealth.objects.count(), "samples": samples}


def consistent(size: dict, final: bool) -> list[str]:
    """The hourly rows must count every stored result, and one 402 per call; all of them in the end."""
    samples, problems = size["samples"], []
    if samples.get("check", 0) != size["results"]:
        problems.append(f"hourly rows count {samples.get('check', 0)} checks for {size['results']} results")
    if samples.get("call", 0) != samples.get("challenge", 0):
        problems.append(f"hourly rows count {samples.get('call', 0)} calls and {samples.get('challenge', 0)} 402s")
    if final and (size["results"], samples.get("call")) != (RESULTS, CALLS):
        problems.append(f"{size['results']} results and {samples.get('call')} calls stored, not {RESULTS} and {CALLS}")
    return problems


def main() -> None:
    started = time.monotonic()
    with paid_call.test_database("bench-catalog-history.sqlite3"):
        services = list(Service.objects.filter(state=Service.State.PUBLISHED, enabled=True)
                        .select_related("pricing_policy"))
        client = Client()
        history = History(services, datetime.now(UTC))
        samples, sizes, loads, plans = {}, {}, {}, {}
        for state in STATES:
            if state != STATES[0]:
                load_start = time.perf_counter()
                history.stage(recent=state == STATES[1])
                analyze()
                loads[state] = time.perf_counter() - load_start
            sizes[state] = stored(datetime.now(UTC))
            problems = consistent(sizes[state], final=state == STATES[-1])
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

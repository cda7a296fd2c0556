"""Synthetic health and call history for the benches that show history does not slow a page.

Used by bench/catalog_history.py ("Catalog and health history") and
bench/dashboard_pages.py ("Dashboard pages"); see bench/README.md.

Deterministic samples (seeded RNGs) over DAYS days ending `now`, across the
given services:

- health checks, evenly spread and taken round-robin over the services (a
  round checks each service once): 96% healthy, 2% degraded, 2% unhealthy,
  log-normal latencies. Stored as HealthCheckResult rows.
- paid calls, evenly spread, Zipf-like over the services: 93% succeeded, 4%
  refused by the upstream (the caller's input), 2% upstream errors, 1% timeouts,
  each after a 402. A succeeded call charges its policy's price over its calls,
  as the pipeline charges it; the others charge nothing. Stored as ToolCall
  rows only when asked (`call_records`).
- the ServiceStatsHour rows that record_* would have written for them: one per
  service, hour, source (check, call, challenge), outcome, latency bucket and
  within-SLA flag, with its count and amount_cents. They are counted here, in
  one pass per source with the same seeds as the stored rows, so they count
  exactly the stored results and calls, not upserted one by one.
- each service's latest health (ServiceHealth, with its last 20 statuses);
- when asked (`runs`), one HealthRun per round of checks, the results linked
  to it: succeeded, but the newest, which is still running.

The history is written in two stages split at an hour `recent_hours` before
`now`: first the recent part (with the latest health), then the older one, so a
bench can measure in between. Rows go in with executemany in chunks (SQLite) or
COPY (PostgreSQL; then analyze(), as autovacuum would after such a load).

The app caches the sums of a statistics window's closed hours until the hour
turns (health.selectors), since samples are only ever counted in the hour they
happen. This history is written into closed hours after the fact, so a History
gives the app's cache a namespace of its own when it is made and again after
each stage (closed_hours_forget): nothing cached before the rows were written is
read, and nothing is shared with another process on the same cache (Redis).
"""

import json
import math
import random
import uuid
from collections import deque
from datetime import datetime, timedelta

from django.core.management.color import no_style
from django.db import connection, transaction
from django.db.models import Sum

from catalog.models import Service
from health import latency
from health import selectors as health_selectors
from health.models import HealthCheckResult, HealthRun, ServiceHealth, ServiceStatsHour
from payments.models import ToolCall

DAYS = 30
CHUNK = 20_000

RESULT_COLUMNS = ("service_id", "run_id", "kind", "status", "latency_ms", "http_status", "upstream_code", "message",
                  "upstream_request_id", "checked_at")
STATS_COLUMNS = ("service_id", "hour", "source", "outcome", "bucket", "within_sla", "count", "amount_cents")
CALL_COLUMNS = ("service_id", "api_key_id", "client_id", "payment_id", "payment_method", "outcome", "http_status",
                "upstream_code", "upstream_request_id", "error", "latency_ms", "amount_cents", "started_at",
                "finished_at")
RUN_COLUMNS = ("id", "trigger", "started_by_id", "service_ids", "full", "concurrency", "status", "total", "done",
               "error", "created_at", "started_at", "finished_at", "heartbeat_at")
# How each call outcome ends, as the pipeline records it: (HTTP status, upstream code, error).
CALL_ENDINGS = {
    "succeeded": (200, "", ""),
    "client_error": (400, "InvalidImage.Download", "the upstream refused the input"),
    "upstream_error": (502, "InternalError", "the upstream failed with HTTP 500"),
    "timeout": (504, "", "the upstream did not answer in time"),
}


class History:
    """Deterministic samples over DAYS days ending now, written in two stages split at an hour."""

    def __init__(self, services: list[Service], now: datetime, *, results: int, calls: int, recent_hours: int,
                 call_records: bool = False, runs: bool = False, api_key=None):
        self.services = services
        self.now = now
        self.results_total, self.calls_total = results, calls
        self.start = now - timedelta(days=DAYS)
        self.split = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=recent_hours - 1)
        self.result_step = (now - self.start) / max(results, 1)
        self.call_step = (now - self.start) / max(calls, 1)
        self.call_records, self.runs, self.api_key = call_records, runs, api_key
        self.to_db = connection.ops.adapt_datetimefield_value
        rng = random.Random(402)
        weights = [1 / (rank + 1) ** 0.8 for rank in range(len(services))]
        rng.shuffle(weights)
        self.call_weights = weights
        self.prices = {s.id: s.pricing_policy.amount_cents // s.pricing_policy.max_calls for s in services}
        closed_hours_forget()

    def first_index(self, step: timedelta) -> int:
        """The first sample (results or calls) at or after the split."""
        return max(0, math.ceil((self.split - self.start) / step - 0.5))

    def stage(self, recent: bool) -> dict[str, int]:
        """Write the recent part (recent=True, first) or the older one; returns the rows written per table."""
        first_result, first_call = self.first_index(self.result_step), self.first_index(self.call_step)
        results = range(first_result, self.results_total) if recent else range(first_result)
        calls = range(first_call, self.calls_total) if recent else range(first_call)
        latest: dict[str, deque] = {s.id: deque(maxlen=ServiceHealth.RECENT) for s in self.services}
        written = {}
        if self.runs:
            written["runs"] = rows_insert(HealthRun, RUN_COLUMNS, self.health_runs(first_result, recent))
            sequence_reset(HealthRun)
        written["results"] = rows_insert(HealthCheckResult, RESULT_COLUMNS, self.results(results, latest))
        if self.call_records:
            written["calls"] = rows_insert(ToolCall, CALL_COLUMNS, self.calls(calls))
        written["hourly rows"] = rows_insert(ServiceStatsHour, STATS_COLUMNS, self.stats(results, calls))
        if recent:
            health_insert(latest)
        closed_hours_forget()
        return written

    def problems(self, *, final: bool) -> list[str]:
        """The hourly rows must count every stored result (and call record), and one 402 per call; in the end
        (final) all of them."""
        samples = dict(ServiceStatsHour.objects.values_list("source").annotate(n=Sum("count")))
        checks, calls, challenges = (samples.get(source, 0) for source in ("check", "call", "challenge"))
        results, found = HealthCheckResult.objects.count(), []
        if checks != results:
            found.append(f"hourly rows count {checks} checks for {results} results")
        if calls != challenges:
            found.append(f"hourly rows count {calls} calls and {challenges} 402s")
        if self.call_records and (records := ToolCall.objects.count()) != calls:
            found.append(f"hourly rows count {calls} calls for {records} call records")
        if final and (results, calls) != (self.results_total, self.calls_total):
            found.append(f"{results} results and {calls} calls stored, not {self.results_total} and {self.calls_total}")
        return found

    # --- Samples: drawn the same way for the stored rows and for the hourly rows that count them ---

    def checks(self, indexes: range):
        """(index, time, service, (status, latency_ms, http_status, code, message)) of each check."""
        rng = random.Random(indexes.start + 1)
        services = self.services
        for i in indexes:
            service = services[i % len(services)]
            yield i, self.start + (i + 0.5) * self.result_step, service, check_sample(rng, service)

    def paid_calls(self, indexes: range):
        """(index, time it finished, service, outcome, latency_ms) of each call."""
        rng = random.Random(indexes.start + 3)
        services, weights = self.services, self.call_weights
        for j in indexes:
            service = rng.choices(services, weights)[0]
            outcome, latency_ms = call_sample(rng, service)
            yield j, self.start + (j + 0.5) * self.call_step, service, outcome, latency_ms

    def charged(self, service: Service, outcome: str) -> int:
        return self.prices[service.id] if outcome == "succeeded" else 0

    # --- Rows ---

    def results(self, indexes: range, latest: dict):
        per_round = len(self.services)
        for i, at, service, (status, latency_ms, http_status, code, message) in self.checks(indexes):
            latest[service.id].append((status, latency_ms, http_status, code, message, at))
            run_id = i // per_round + 1 if self.runs else None
            yield (service.id, run_id, "probe", status, latency_ms, http_status, code, message, f"BENCH-{i:08X}",
                   self.to_db(at))

    def calls(self, indexes: range):
        key_id = self.api_key.pk if self.api_key else None
        client_id = self.api_key.client_id if self.api_key else ""
        for j, at, service, outcome, latency_ms in self.paid_calls(indexes):
            http_status, code, error = CALL_ENDINGS[outcome]
            yield (service.id, key_id, client_id, None, "x402" if j % 4 == 0 else "token", outcome, http_status, code,
                   f"BENCH-C{j:08X}", error, latency_ms, self.charged(service, outcome),
                   self.to_db(at - timedelta(milliseconds=latency_ms)), self.to_db(at))

    def health_runs(self, first_result: int, recent: bool):
        """One run per round of checks, written with the stage that holds the round's last result (the results
        of a round cut by the split then find their run: the recent stage goes first). The newest is running."""
        per_round = len(self.services)
        rounds = math.ceil(self.results_total / per_round)
        ids = json.dumps([s.id for s in self.services])
        for k in range(rounds):
            last = min((k + 1) * per_round, self.results_total) - 1
            if (last >= first_result) != recent:
                continue
            created = self.start + k * per_round * self.result_step
            finished = self.start + (last + 1) * self.result_step
            running = k == rounds - 1
            yield (k + 1, "schedule", None, ids, False, 10, "running" if running else "succeeded", per_round,
                   last + 1 - k * per_round, "", self.to_db(created), self.to_db(created),
                   None if running else self.to_db(finished), self.to_db(self.now if running else finished))

    def stats(self, results: range, calls: range):
        """The hourly rows of those results and calls, hour by hour (both are in time order)."""
        counts: dict[tuple, list[int]] = {}
        hour = None
        for _, at, service, (status, latency_ms, *_) in self.checks(results):
            if hour != (current := at.replace(minute=0, second=0, microsecond=0)):
                yield from self.flush(counts)
                hour = current
            self.count(counts, service, hour, "check", status, latency_ms)
        yield from self.flush(counts)
        hour = None
        for _, at, service, outcome, latency_ms in self.paid_calls(calls):
            if hour != (current := at.replace(minute=0, second=0, microsecond=0)):
                yield from self.flush(counts)
                hour = current
            self.count(counts, service, hour, "call", outcome, latency_ms, self.charged(service, outcome))
            self.count(counts, service, hour, "challenge", "payment_required", None)
        yield from self.flush(counts)

    @staticmethod
    def count(counts: dict, service: Service, hour: datetime, source: str, outcome: str, latency_ms: int | None,
              cents: int = 0) -> None:
        within_sla = latency_ms is not None and latency_ms <= service.sla_max_latency_ms
        entry = counts.setdefault((service, hour, source, outcome, latency.bucket(latency_ms), within_sla), [0, 0])
        entry[0] += 1
        entry[1] += cents

    def flush(self, counts: dict):
        for (service, hour, source, outcome, bucket, within_sla), (n, cents) in counts.items():
            yield service.id, self.to_db(hour), source, outcome, bucket, within_sla, n, cents
        counts.clear()


def closed_hours_forget() -> None:
    """The app's cached sums of closed hours under a new namespace (as the tests do): what was cached before
    this history was written into those hours is not read again."""
    if hasattr(health_selectors, "CACHE_NAMESPACE"):
        health_selectors.CACHE_NAMESPACE = f"bench-history-{uuid.uuid4().hex}"


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


def rows_insert(model, columns: tuple[str, ...], rows) -> int:
    """Bulk rows, in chunks: executemany on SQLite, COPY on PostgreSQL."""
    table, written = model._meta.db_table, 0
    names = ", ".join(connection.ops.quote_name(column) for column in columns)  # HealthRun has "full"
    if connection.vendor == "postgresql":
        copy_sql = f"COPY {table} ({names}) FROM STDIN"
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)
                written += 1
        return written
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
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


def sequence_reset(model) -> None:
    """PostgreSQL: the id sequence past the ids written explicitly (SQLite's AUTOINCREMENT follows by itself)."""
    with connection.cursor() as cursor:
        for sql in connection.ops.sequence_reset_sql(no_style(), [model]):
            cursor.execute(sql)


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


def analyze(*models) -> None:
    """PostgreSQL: fresh planner statistics, as autovacuum would have after such a load."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {', '.join(model._meta.db_table for model in models)}")

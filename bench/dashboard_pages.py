"""Dashboard pages as history grows: the overview and the services page with 1,000,000 results and calls.

Part of `make bench` (bench/run.py calls main()); see bench/README.md, "Dashboard pages".

The requirement: GET /dashboard/ (the overview) and GET /dashboard/services/
answer in under 200 ms with 62 services and 1,000,000 stored health results
and calls. Both pages read hourly rollups (ServiceStatsHour) and one row per
service (ServiceHealth), never the raw results or call records, so their
cost must not follow the history.

On a throwaway test database (paid_call.test_database: SQLite under
SERVER402_VAR_DIR, or `test_<name>` of DATABASE_URL) holding the reference
catalog (62 services) and a signed-in user (any user may look), both pages are
timed in three states:

1. empty history: no results, calls, hourly rows, latest health or runs: the
   baseline;
2. 7 days: the newest 170 hours of the history below (the overview's traffic
   reads the current hour and the 167 before it; two hours spare), each
   service's latest health and the runs of those days, the newest running;
3. 30 days: the older days added, BENCH_DASHBOARD_RESULTS (default 1,000,000)
   HealthCheckResult rows and BENCH_DASHBOARD_CALLS (default 1,000,000)
   ToolCall rows in all, with the hourly rows they would have written
   (bench/synthetic_history.py, shared with bench/catalog_history.py).

Timed per state, in two regimes: the app as configured, its cached sums of the
windows' closed hours warmed first (hourly_statistics_warm, as Celery beat does
at each hour's start; its time is printed), and every hour read live
(HEALTH_STATS_CACHE_SECONDS=0: what the hour's first request pays when nothing
warmed the cache). BENCH_DASHBOARD_REQUESTS (default 50) requests of each page,
the two pages taking turns, after WARM_UP of each, through Django's test
client (client.force_login; no socket): p50, p95 and max, and the CPU time of
the request's thread. Ratios: each state over the empty history, and 30 days
over 7 days (1.00x: the days beyond the widest window a page reads cost
nothing). The budget line per page and regime: p95 under 200 ms with 30 days
of history. Every answer must be 200 and show the 62 services (services page)
or the traffic table (overview). Beside them, how busy the machine's CPUs were
meanwhile (/proc/stat): others' work slows every request alike.

Also, empty and with 30 days: where each page's time goes (the selectors and
render its view calls, wrapped for timing, not changed); the same requests
through gunicorn as the Procfile serves the app (BENCH_DASHBOARD_HTTP=0 leaves
it out). In every state, the SQL statements of each page, each timed. For
scale and as a check, the overview's traffic figures counted from the ToolCall
rows instead of the rollups: they must be equal. BENCH_PROFILE=1 adds a
pyinstrument profile of each page with 30 days of history (`pip install
--target /tmp/pyinst pyinstrument`, `PYTHONPATH=/tmp/pyinst`; not a
dependency).

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/dashboard_pages.py`.
"""

import importlib
import os
import shutil
import statistics
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count, Q, Sum  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

import paid_call  # noqa: E402  (bench/, beside this file)
import synthetic_history  # noqa: E402  (bench/, beside this file)
from catalog.models import Service  # noqa: E402
from health import selectors as health_selectors  # noqa: E402
from health.models import HealthCheckResult, HealthRun, ServiceHealth, ServiceStatsHour  # noqa: E402
from health.selectors import traffic_totals, window_start  # noqa: E402
from payments import services as payment_services  # noqa: E402
from payments.models import ToolCall  # noqa: E402

RESULTS = int(os.environ.get("BENCH_DASHBOARD_RESULTS", "1000000"))
CALLS = int(os.environ.get("BENCH_DASHBOARD_CALLS", "1000000"))
REQUESTS = int(os.environ.get("BENCH_DASHBOARD_REQUESTS", "50"))
HTTP = os.environ.get("BENCH_DASHBOARD_HTTP", "1") != "0"
WARM_UP = 5
BUDGET_MS = 200
WEEK_HOURS = 7 * 24
RECENT_HOURS = WEEK_HOURS + 2
PAGES = {"GET /dashboard/ (overview)": "/dashboard/", "GET /dashboard/services/": "/dashboard/services/"}
# What each page's view calls, by the name the view finds it under (health.views reads `selectors.<name>` at call
# time; catalog.views imported quality_blocks and latency_by_hour by name).
STEPS = {
    "GET /dashboard/ (overview)": ["health.selectors.traffic_totals", "health.selectors.latency_percentiles",
                                   "health.selectors.health_status_counts", "health.selectors.failing_services",
                                   "health.selectors.health_run_latest", "health.views.render"],
    "GET /dashboard/services/": ["catalog.selectors.dashboard_categories", "catalog.selectors.dashboard_services",
                                 "catalog.views.quality_blocks", "catalog.views.latency_by_hour",
                                 "catalog.views.render"],
}
STEP_REQUESTS = max(REQUESTS // 2, 1)
STATES = ("empty history", "7 days", "30 days")
END_STATES = (STATES[0], STATES[-1])
# The app caches the sums of a window's closed hours until the hour turns (health.selectors, since f9c2004);
# each page then reads only the current hour live. Both regimes are timed.
MODES = ("closed hours cached", "closed hours read live")
MODE_TITLES = {
    MODES[0]: "Closed hours cached (the steady state: Celery beat sums them at each hour's start)",
    MODES[1]: "Closed hours read live (HEALTH_STATS_CACHE_SECONDS=0: what the hour's first request pays when "
              "nothing warmed the cache)",
}


# --- Measures ------------------------------------------------------------------


def page_problem(path: str, status: int, body: bytes, services: int) -> str | None:
    """What is wrong with a page's answer, if anything."""
    if status != 200:
        return f"{path} answered {status}"
    if path == PAGES["GET /dashboard/services/"] and (rows := body.count(b'data-service="')) != services:
        return f"{path} shows {rows} services, not {services}"
    if path == PAGES["GET /dashboard/ (overview)"] and b'id="traffic"' not in body:
        return f"{path} has no traffic table"
    return None


class MachineLoad:
    """What the machine's CPUs did meanwhile (Linux /proc/stat): busy CPUs on average, this process's share, steal.

    The figures are only worth what the machine was free to give: other processes (or the host, as steal)
    taking CPUs slow every request alike.
    """

    def __enter__(self):
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc):
        end = self._snapshot()
        self.busy = self.own = self.steal = None
        if self._start and end:
            (total, idle, steal, own, wall), (total2, idle2, steal2, own2, wall2) = self._start, end
            ticks, seconds = os.sysconf("SC_CLK_TCK"), wall2 - wall
            self.busy = (total2 - total - (idle2 - idle) - (steal2 - steal)) / ticks / seconds
            self.own = (own2 - own) / seconds
            self.steal = (steal2 - steal) / max(total2 - total, 1)

    @staticmethod
    def _snapshot():
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal
        return sum(values), values[3] + values[4], values[7], time.process_time(), time.monotonic()

    def __str__(self):
        if self.busy is None:
            return "unknown"
        return f"{self.busy:.2f} of {os.cpu_count()} CPUs busy (this process {self.own:.2f}), steal {self.steal:.0%}"


def timed_pages(get, services: int, warm_up: int, requests: int = REQUESTS,
                cpu: dict | None = None) -> dict[str, list[float]]:
    """`warm_up` untimed requests of each page, then `requests` of each, the pages taking turns; ms per request.

    `cpu`, if given, gets the CPU ms this thread spent on each timed request (in-process, that is the request
    minus waiting: for the CPUs, and on PostgreSQL for the server's work).
    """
    samples: dict[str, list[float]] = {page: [] for page in PAGES}
    for round_ in range(warm_up + requests):
        for page, path in PAGES.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            status, body = get(path)
            elapsed_ms, cpu_ms = (time.perf_counter() - start) * 1000, (time.thread_time() - start_cpu) * 1000
            if problem := page_problem(path, status, body, services):
                raise SystemExit(f"dashboard pages bench: {problem}")
            if round_ >= warm_up:
                samples[page].append(elapsed_ms)
                if cpu is not None:
                    cpu.setdefault(page, []).append(cpu_ms)
    return samples


def in_process(client: Client, services: int, cpu: dict) -> dict[str, list[float]]:
    def get(path: str) -> tuple[int, bytes]:
        response = client.get(path)
        return response.status_code, response.content

    return timed_pages(get, services, WARM_UP, cpu=cpu)


class Steps:
    """Where each page's time goes: the calls its view makes (as the view module names them), wrapped for timing
    meanwhile, not changed. A step the code no longer has is left out."""

    def __init__(self):
        self.samples: dict[str, list[float]] = {}
        self._originals: list[tuple[object, str, object]] = []

    def __enter__(self):
        for steps in STEPS.values():
            for dotted in steps:
                module_name, name = dotted.rsplit(".", 1)
                module = importlib.import_module(module_name)
                function = getattr(module, name, None)
                if function is None:
                    continue
                self._originals.append((module, name, function))
                setattr(module, name, self._timing(dotted, function))
        return self

    def _timing(self, dotted: str, function):
        samples = self.samples.setdefault(dotted, [])

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                samples.append((time.perf_counter() - start) * 1000)

        return wrapper

    def __exit__(self, *exc):
        for module, name, function in reversed(self._originals):
            setattr(module, name, function)


def steps_timed(client: Client, services: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """STEP_REQUESTS requests of each page with its steps timed: (whole requests, steps)."""
    def get(path: str) -> tuple[int, bytes]:
        response = client.get(path)
        return response.status_code, response.content

    with Steps() as steps:
        whole = timed_pages(get, services, 0, STEP_REQUESTS)
    return whole, steps.samples


def hourly_warm_ms() -> float | None:
    """What Celery beat pays at each hour's start (hourly_statistics_warm), from an empty cache."""
    warm = getattr(health_selectors, "hourly_statistics_warm", None)
    if warm is None:
        return None
    start = time.perf_counter()
    warm()
    return (time.perf_counter() - start) * 1000


def closed_hours(mode: str):
    """The app as configured (MODES[0]: closed hours cached), or every hour read live (HEALTH_STATS_CACHE_SECONDS=0:
    what the hour's first request pays when nothing warmed the cache)."""
    return override_settings(HEALTH_STATS_CACHE_SECONDS=0) if mode == MODES[1] else nullcontext()


def statements(client: Client) -> dict[str, list[tuple[float, str]]]:
    """Each page's SQL statements: (ms, sql), timed around the driver's execute (on SQLite, rows fetched
    afterwards are not in it; a GROUP BY has done its work by its first row)."""
    found = {}
    for page, path in PAGES.items():
        timings = []

        def timing(execute, sql, params, many, context):
            start = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                timings.append(((time.perf_counter() - start) * 1000, sql))

        with connection.execute_wrapper(timing):
            client.get(path)
        found[page] = timings
    return found


def through_gunicorn(db_url: str, session: str, services: int, var_dir: Path) -> dict[str, list[float]]:
    """The same requests to the app under gunicorn (2 workers x 4 threads), one keep-alive client, one at a time.

    Its cache is the file cache of a var dir of its own (`var_dir`, fresh for each state; no Redis even when
    REDIS_URL is set), so no sums cached before the state's history are read.
    """
    port = paid_call.free_port()
    var_dir.mkdir(parents=True, exist_ok=True)
    log_path = var_dir / "bench-dashboard-gunicorn.log"
    process = paid_call.gunicorn_start(port, db_url, log_path,
                                       extra_env={"SERVER402_VAR_DIR": str(var_dir), "REDIS_URL": ""})
    try:
        paid_call.server_wait(process, port, log_path)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", cookies={settings.SESSION_COOKIE_NAME: session},
                          timeout=30) as http:
            def get(path: str) -> tuple[int, bytes]:
                response = http.get(path)
                return response.status_code, response.content

            # Twice the warm-up: each of the two workers answers its first requests cold.
            return timed_pages(get, services, 2 * WARM_UP)
    finally:
        paid_call.server_stop(process)
        shutil.rmtree(var_dir, ignore_errors=True)


def traffic_from_records(now: datetime) -> tuple[dict[str, tuple[int, int, int]], float]:
    """For scale, and as a check: the overview's paid-call figures counted from the ToolCall rows.

    Returns {period: (calls, successes, revenue cents)} and the ms the one query took. A call is counted in the
    hour it finished, as the rollup counts it.
    """
    day = window_start(now)
    week = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WEEK_HOURS - 1)
    in_day, succeeded = Q(finished_at__gte=day), Q(outcome="succeeded")
    start = time.perf_counter()
    row = ToolCall.objects.filter(finished_at__gte=week).aggregate(
        week_n=Count("id"), week_ok=Count("id", filter=succeeded), week_cents=Sum("amount_cents"),
        day_n=Count("id", filter=in_day), day_ok=Count("id", filter=in_day & succeeded),
        day_cents=Sum("amount_cents", filter=in_day))
    elapsed_ms = (time.perf_counter() - start) * 1000
    return {"7d": (row["week_n"], row["week_ok"], row["week_cents"] or 0),
            "24h": (row["day_n"], row["day_ok"], row["day_cents"] or 0)}, elapsed_ms


def traffic_check(now: datetime) -> tuple[float, float, list[str]]:
    """traffic_totals() against the same figures from the call records: (its ms, theirs, differences)."""
    start = time.perf_counter()
    rolled = traffic_totals(now=now)
    rollup_ms = (time.perf_counter() - start) * 1000
    raw, raw_ms = traffic_from_records(now)
    differences = [f"{period}: the overview says {(t.calls, t.successes, t.revenue_cents)} (calls, successes, "
                   f"cents), the call records {raw[period]}"
                   for period, t in rolled.items() if (t.calls, t.successes, t.revenue_cents) != raw[period]]
    return rollup_ms, raw_ms, differences


def stored(now: datetime) -> dict[str, int]:
    week = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=WEEK_HOURS - 1)
    return {
        "results": HealthCheckResult.objects.count(), "call records": ToolCall.objects.count(),
        "health runs": HealthRun.objects.count(), "hourly rows": ServiceStatsHour.objects.count(),
        "in 24 h": ServiceStatsHour.objects.filter(hour__gte=window_start(now)).count(),
        "in 7 days": ServiceStatsHour.objects.filter(hour__gte=week).count(),
        "latest health rows": ServiceHealth.objects.count(),
    }


def profile(client: Client, mode: str) -> None:
    """BENCH_PROFILE=1: where each page's time goes, with the history loaded (pyinstrument, when importable)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("\nBENCH_PROFILE: pyinstrument is not importable (pip install --target /tmp/pyinst pyinstrument; "
              "PYTHONPATH=/tmp/pyinst); no profile.")
        return
    for page, path in PAGES.items():
        profiler = Profiler(interval=0.0005)
        with profiler:
            for _ in range(REQUESTS):
                client.get(path)
        print(f"\npyinstrument profile of {REQUESTS} requests of {page}, 30 days of history, {mode}:\n")
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    started = time.monotonic()
    with paid_call.test_database("bench-dashboard-pages.sqlite3") as db_url:
        services = list(Service.objects.select_related("pricing_policy").order_by("id"))
        operator = get_user_model().objects.create_user("bench-operator")
        client = Client()
        client.force_login(operator)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        api_key = payment_services.api_key_create(label="bench dashboard").api_key
        history = synthetic_history.History(services, datetime.now(UTC), results=RESULTS, calls=CALLS,
                                            recent_hours=RECENT_HOURS, call_records=True, runs=True, api_key=api_key)
        # By mode, then state (then page).
        samples, cpu, queries, machine = ({mode: {} for mode in MODES} for _ in range(4))
        steps, http, sizes, loads, warm = {}, {}, {}, {}, {}
        for index, state in enumerate(STATES):
            if index:
                load_start = time.perf_counter()
                history.stage(recent=index == 1)
                synthetic_history.analyze(HealthCheckResult, ToolCall, HealthRun, ServiceStatsHour, ServiceHealth)
                loads[state] = time.perf_counter() - load_start
                if problems := history.problems(final=state == STATES[-1]):
                    raise SystemExit(f"dashboard pages bench, {state}: {'; '.join(problems)}")
            sizes[state] = stored(datetime.now(UTC))
            # The History gave the app's cache a fresh namespace when made and after each stage (see
            # synthetic_history): the warm-up starts from an empty cache.
            warm[state] = hourly_warm_ms()
            for mode in MODES:
                with closed_hours(mode):
                    with MachineLoad() as machine[mode][state]:
                        samples[mode][state] = in_process(client, len(services), cpu[mode].setdefault(state, {}))
                    queries[mode][state] = statements(client)
                    if state in END_STATES and (mode, state) != (MODES[1], STATES[0]):
                        steps[mode, state] = steps_timed(client, len(services))
            if HTTP and state in END_STATES:
                http[state] = through_gunicorn(db_url, session, len(services),
                                               Path(settings.VAR_DIR) / f"bench-dashboard-gunicorn-{index}")
        rollup_ms, raw_ms, differences = traffic_check(history.now)
        if os.environ.get("BENCH_PROFILE"):
            for mode in MODES:
                with closed_hours(mode):
                    profile(client, mode)
    report(samples, cpu, queries, machine, steps, http, sizes, loads, warm, (rollup_ms, raw_ms),
           time.monotonic() - started)
    if differences:
        raise SystemExit(f"dashboard pages bench: the rollups and the call records disagree: {'; '.join(differences)}")


# --- Report --------------------------------------------------------------------


def _cuts(samples: list[float]) -> tuple[float, float, float]:
    p50, p95 = paid_call.percentiles(samples)
    return p50, p95, max(samples)


def _latency_table(samples: dict[str, dict[str, list[float]]], queries: dict | None = None,
                   cpu: dict | None = None) -> None:
    states = list(samples)
    first, last = states[0], states[-1]
    middle = states[1] if len(states) > 2 else None
    extra = f" | {last} vs {middle}" if middle else ""
    count = " | SQL statements" if queries else ""
    cpu_head = " | CPU ms p50 (this thread)" if cpu else ""
    print(f"| page | history | p50 ms | p95 ms | max ms | p50 vs {first} | p95 vs {first}{extra}{count}{cpu_head} |")
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if middle else "") + ("---:|" if queries else "")
          + ("---:|" if cpu else ""))
    for page in PAGES:
        base50, base95, _ = _cuts(samples[first][page])
        for state in states:
            p50, p95, most = _cuts(samples[state][page])
            row = f"| {page} | {state} | {p50:.2f} | {p95:.2f} | {most:.2f} | {p50 / base50:.2f}x | {p95 / base95:.2f}x"
            if middle:
                row += f" | {p50 / _cuts(samples[middle][page])[0]:.2f}x" if state == last else " | "
            if queries:
                row += f" | {len(queries[state][page])}"
            if cpu:
                row += f" | {statistics.median(cpu[state][page]):.2f}"
            print(row + " |")


def _steps_table(steps: dict[tuple[str, str], tuple[dict, dict]]) -> None:
    columns = list(steps)
    last = columns[-1]
    label = {column: f"{column[1]}, {column[0]}" for column in columns}
    print("| page | step | " + " | ".join(f"{label[c]} p50 ms" for c in columns)
          + " | " + " | ".join(f"share, {label[c]}" for c in columns[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(columns) - 1))
    for page, names in STEPS.items():
        whole = {column: statistics.median(steps[column][0][page]) for column in columns}
        # Each step runs once per request, so the rest is taken request by request.
        rests = {column: list(steps[column][0][page]) for column in columns}
        rows = []
        for name in names:
            if name not in steps[last][1]:
                continue
            p50 = {column: statistics.median(steps[column][1][name]) for column in columns}
            for column in columns:
                rests[column] = [rest - step for rest, step in zip(rests[column], steps[column][1][name], strict=True)]
            rows.append((name.split(".", 1)[1], p50))
        rows.append(("the rest (middleware, session, user, the view's own code)",
                     {column: statistics.median(rests[column]) for column in columns}))
        rows.append(("whole request, steps timed", whole))
        for name, p50 in rows:
            print(f"| {page} | {name} | " + " | ".join(f"{p50[c]:.2f}" for c in columns)
                  + " | " + " | ".join(f"{p50[c] / whole[c]:.0%}" for c in columns[1:]) + " |")


def report(samples: dict, cpu: dict, queries: dict, machine: dict, steps: dict, http: dict, sizes: dict,
           loads: dict, warm: dict, traffic: tuple[float, float], seconds: float) -> None:
    engine = connection.vendor
    full = STATES[-1]
    print(f"\nDashboard pages ({engine}; Django test client, signed in; {REQUESTS} requests of each page after "
          f"{WARM_UP} warm-up, the pages taking turns)")
    for mode in MODES:
        print(f"\n{MODE_TITLES[mode]}:\n")
        _latency_table(samples[mode], queries[mode], cpu[mode])
        print()
        for state, load in machine[mode].items():
            print(f"the machine while timing, {state}: {load}")
        print()
        for page in PAGES:
            p50, p95, most = _cuts(samples[mode][full][page])
            verdict = "pass" if p95 < BUDGET_MS else "FAIL"
            print(f"budget {BUDGET_MS} ms, {page}, {full} of history, {mode}: p95 {p95:.1f} ms (max {most:.1f}): "
                  f"{verdict}")
    if any(value is not None for value in warm.values()):
        print("\nThe hour's warm-up (hourly_statistics_warm, Celery beat at each hour's start), from an empty cache: "
              + ", ".join(f"{state} {ms:.0f} ms" for state, ms in warm.items() if ms is not None) + ".")
    print(f"\nWhere a page's time goes ({STEP_REQUESTS} requests of each, the view's calls timed; render includes "
          "the template's own queries, if any):\n")
    _steps_table(steps)
    if http:
        print(f"\nThe same through gunicorn ({paid_call.WORKERS} workers x {paid_call.THREADS} threads, one keep-alive "
              f"client, one request at a time, {2 * WARM_UP} warm-up of each page; closed hours cached, file cache):\n")
        _latency_table(http)
    print("\n| history | results | call records | health runs | hourly rows | of them in 24 h | in 7 days "
          "| latest health rows | load s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for state in STATES:
        size = sizes[state]
        load = f"{loads[state]:.1f}" if state in loads else ""
        print(f"| {state} | {size['results']:,} | {size['call records']:,} | {size['health runs']:,} "
              f"| {size['hourly rows']:,} | {size['in 24 h']:,} | {size['in 7 days']:,} "
              f"| {size['latest health rows']} | {load} |")
    rollup_ms, raw_ms = traffic
    print(f"\nFor scale: the overview's traffic figures (24 h and 7 days) take {rollup_ms:.1f} ms from the hourly "
          f"rows (traffic_totals(), closed hours cached) and {raw_ms:.1f} ms counted from the "
          f"{sizes[full]['call records']:,} call records; the figures are equal.")
    for mode in MODES:
        for page in PAGES:
            print(f"\nSQL statements of {page}, {mode}, ms each (empty history -> {full}):")
            empty = queries[mode][STATES[0]][page]
            for index, (ms, sql) in enumerate(queries[mode][full][page]):
                before = f"{empty[index][0]:.2f}" if index < len(empty) else "-"
                print(f"  {before:>6} -> {ms:6.2f}  {sql if len(sql) < 200 else sql[:150] + ' ...'}")
    print(f"\nthis section took {seconds:.0f} s (test database, catalog, history load and gunicorn included)")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

"""Health runs at scale: 1,000 services checked 50 at a time against an upstream that answers in 100 ms.

Part of `make bench` (bench/run.py calls main()); see bench/README.md, "Health runs".

On a throwaway test database (paid_call.test_database: SQLite under
SERVER402_VAR_DIR, or `test_<name>` of DATABASE_URL) holding the reference
catalog, the 62 services are cloned with new ids, bound to the same real
actions, up to BENCH_HEALTH_SERVICES (default 1,000) published services. The
sandbox emulator of Alibaba Cloud is served by gunicorn (2 workers x 64
threads: either worker can serve all 50 requests at once) with SANDBOX_LATENCY_MS=100, so
every answer, a probe's parameter error included, takes at least 100 ms. This
process's ALIBABA_CLOUD_ENDPOINT points at it.

Subject: health_run_start(trigger="command", service_ids=<all of them>,
concurrency=50, enqueue=False), then health_run_execute(run_id=...) in this
process: exactly what the Celery worker's execute_health_run task runs. The
ideal is ceil(N / 50) x 100 ms (2.0 s for 1,000); the figure is actual / ideal
(1.00x is the ideal, higher is slower), as the other benches put subject over
baseline.

Baseline, same run: the same N probes (health.probes.check, which writes
nothing) on a pool of 50 threads, no run, no database. It is what the
machine, the client and the emulator allow; the run over it is what the run
itself costs (storing each result, the latest health, the hourly statistics).

Then a run of BENCH_HEALTH_SERIAL (default 50) services at concurrency 1:
ideal N x 100 ms.

Every run must succeed with every result healthy; anything else is printed
(with the emulator's log) and fails the bench.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/health_runs.py`.
"""

import math
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

import paid_call  # noqa: E402  (bench/, beside this file)
from x402_throughput import process_group_cpu_seconds  # noqa: E402
from catalog.models import Service  # noqa: E402
from health import probes  # noqa: E402
from health import services as health_services  # noqa: E402
from health.models import HealthCheckResult, HealthRun, ServiceHealth, ServiceStatsHour  # noqa: E402

SERVICES = int(os.environ.get("BENCH_HEALTH_SERVICES", "1000"))
SERIAL_SERVICES = int(os.environ.get("BENCH_HEALTH_SERIAL", "50"))
CONCURRENCY = 50
LATENCY_MS = 100
# Two workers for the two CPUs of this machine, each with more threads than the run has checks in flight:
# keep-alive connections are not spread evenly, and a gthread worker holding more connections than threads
# queues the extra requests behind the 100 ms sleep (4 x 16 made the baseline's checks take 200 ms, not 100).
EMULATOR_WORKERS, EMULATOR_THREADS = 2, 64


def ideal_seconds(services: int, concurrency: int) -> float:
    return math.ceil(services / concurrency) * LATENCY_MS / 1000


def services_published(total: int) -> tuple[list[str], list[str]]:
    """The reference services plus clones (new ids, same actions) up to `total`, all published: their ids, and
    the reference services that have no free probe, given the full check as the probe's own message advises."""
    Service.objects.update(state=Service.State.PUBLISHED, enabled=True)
    no_probe = [s.id for s in Service.objects.order_by("id") if probes.probe_arguments(s) is None]
    Service.objects.filter(id__in=no_probe).update(health_full_check=True)
    templates = list(Service.objects.order_by("id"))
    clones, count = [], len(templates)
    while count < total:
        template = templates[count % len(templates)]
        clone = Service(**{f.attname: getattr(template, f.attname) for f in Service._meta.concrete_fields})
        clone.id = f"{template.id}-h{count}"
        clone.internal_id = f"{template.internal_id}-h{count}"
        clone.state, clone.enabled = Service.State.PUBLISHED, True
        clones.append(clone)
        count += 1
    Service.objects.bulk_create(clones, batch_size=500)
    return list(Service.objects.order_by("id").values_list("id", flat=True)[:total]), no_probe


class Cpu:
    """CPU seconds (user + system) spent meanwhile by this process (every thread) and by the emulator's processes."""

    def __init__(self, emulator_group: int):
        self.group = emulator_group

    def __enter__(self):
        self._own, self._emulator = time.process_time(), process_group_cpu_seconds(self.group)
        return self

    def __exit__(self, *exc):
        self.own = time.process_time() - self._own
        emulator = process_group_cpu_seconds(self.group)
        self.emulator = None if emulator is None or self._emulator is None else emulator - self._emulator


class Timings:
    """Where a run's time goes: each check (on the pool's threads) and each batch of results stored (on the run's
    thread; the checks that finished together are stored in one transaction).

    The two functions are wrapped, not changed; a wrapper costs two perf_counter() calls.
    """

    def __init__(self):
        self.checks: list[float] = []
        self.records: list[float] = []
        self.batch_sizes: list[int] = []

    def __enter__(self):
        self._check, self._record = probes.check, health_services.health_results_record

        def check(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._check(*args, **kwargs)
            finally:
                self.checks.append(time.perf_counter() - start)

        def record(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._record(*args, **kwargs)
            finally:
                self.records.append(time.perf_counter() - start)
                self.batch_sizes.append(len(kwargs["checked"]))

        probes.check, health_services.health_results_record = check, record
        return self

    def __exit__(self, *exc):
        probes.check, health_services.health_results_record = self._check, self._record


def health_run(service_ids: list[str], concurrency: int, emulator_group: int) -> dict:
    """One run, timed: what `manage.py run_health_checks --inline` does, and a Celery worker's execute_health_run."""
    with Timings() as timings, Cpu(emulator_group) as cpu:
        start = time.perf_counter()
        run = health_services.health_run_start(trigger=HealthRun.Trigger.COMMAND, service_ids=service_ids,
                                               concurrency=concurrency, enqueue=False)
        executed = health_services.health_run_execute(run_id=run.pk)
        seconds = time.perf_counter() - start
    statuses = dict(HealthCheckResult.objects.filter(run=run).values_list("status").annotate(n=Count("id")))
    return {"services": len(service_ids), "concurrency": concurrency, "seconds": seconds, "cpu": cpu,
            "run": executed, "statuses": statuses, "checks": timings.checks, "records": timings.records,
            "batch_sizes": timings.batch_sizes}


def baseline(services: list[Service], concurrency: int, emulator_group: int) -> dict:
    """The same checks (probe, or full check where the service asks for it) on a pool of threads, nothing stored."""
    with Cpu(emulator_group) as cpu:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            outcomes = list(pool.map(lambda s: probes.check(s, full=s.health_full_check), services))
        seconds = time.perf_counter() - start
    return {"services": len(services), "concurrency": concurrency, "seconds": seconds, "cpu": cpu,
            "statuses": dict(Counter(str(outcome.status) for outcome in outcomes)),
            "examples": {outcome.status: outcome.message for outcome in outcomes}}


def problems_of(result: dict, label: str) -> list[str]:
    problems = []
    run = result.get("run")
    if run is not None and (run.status != HealthRun.Status.SUCCEEDED or run.done != result["services"]):
        problems.append(f"{label}: run {run.status}, {run.done}/{run.total} done {run.error}")
    unhealthy = {status: n for status, n in result["statuses"].items() if status != "healthy"}
    if unhealthy or sum(result["statuses"].values()) != result["services"]:
        problems.append(f"{label}: statuses {result['statuses']} for {result['services']} services"
                        + (f"; e.g. {result['examples']}" if "examples" in result else ""))
    return problems


def main() -> None:
    """Measure and print; raise SystemExit when a run did not end with every service healthy."""
    started = time.monotonic()
    port = paid_call.free_port()
    log_path = Path(settings.VAR_DIR) / "bench-health-emulator.log"
    with paid_call.test_database("bench-health-runs.sqlite3") as db_url:
        process = None
        try:
            ids, no_probe = services_published(max(SERVICES, SERIAL_SERVICES))
            services = list(Service.objects.filter(id__in=ids[:SERVICES]).order_by("id"))
            command = [sys.executable, "-m", "gunicorn", "server402.wsgi", "--bind", f"127.0.0.1:{port}",
                       "--workers", str(EMULATOR_WORKERS), "--threads", str(EMULATOR_THREADS),
                       "--keep-alive", "60", "--graceful-timeout", "5", "--no-control-socket"]
            env = paid_call.server_env(port, db_url, {"SANDBOX_LATENCY_MS": str(LATENCY_MS)})
            process = paid_call.server_start(command, env, log_path)
            paid_call.server_wait(process, port, log_path)
            with override_settings(ALIBABA_CLOUD_ENDPOINT=f"http://127.0.0.1:{port}/sandbox/aliyun/{{product}}"):
                baseline(services[:CONCURRENCY], CONCURRENCY, process.pid)  # warm up: connections, workers
                floor = baseline(services, CONCURRENCY, process.pid)
                wide = health_run(ids[:SERVICES], CONCURRENCY, process.pid)
                serial = health_run(ids[:SERIAL_SERVICES], 1, process.pid)
            stored = {
                "results": HealthCheckResult.objects.count(),
                "latest health rows": ServiceHealth.objects.count(),
                "hourly statistics rows": ServiceStatsHour.objects.count(),
            }
            problems = problems_of(floor, "baseline") + problems_of(wide, "run") + problems_of(serial, "serial run")
            log_tail = log_path.read_text()[-3000:] if problems else ""
        finally:
            if process is not None:
                paid_call.server_stop(process)
            log_path.unlink(missing_ok=True)
    report(floor, wide, serial, stored, no_probe, problems, log_tail, time.monotonic() - started)


def _ms(samples: list[float], fraction: float) -> float:
    if len(samples) < 2:
        return samples[0] * 1000 if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[round(fraction * 100) - 1] * 1000


def report(floor: dict, wide: dict, serial: dict, stored: dict, no_probe: list[str], problems: list[str],
           log_tail: str, seconds: float) -> None:
    engine = connection.vendor + (" + Redis cache" if settings.REDIS_URL else "")
    print(f"\nHealth runs ({engine}; emulator: gunicorn {EMULATOR_WORKERS} workers x {EMULATOR_THREADS} threads, "
          f"SANDBOX_LATENCY_MS={LATENCY_MS}; the run executed in-process, as the Celery worker does)\n")
    print("| what | services | concurrency | wall s | ideal s | vs ideal | checks per s | vs baseline "
          "| CPU ms per check: this process | emulator |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [("health run (start + execute)", wide, floor), ("baseline: the same probes, nothing stored", floor, floor),
            ("health run, one at a time", serial, None)]
    for label, result, base in rows:
        ideal = ideal_seconds(result["services"], result["concurrency"])
        ratio = f"{result['seconds'] / base['seconds']:.2f}x" if base else ""
        cpu = result["cpu"]
        emulator = f"{cpu.emulator / result['services'] * 1000:.1f}" if cpu.emulator is not None else "n/a"
        print(f"| {label} | {result['services']} | {result['concurrency']} | {result['seconds']:.2f} | {ideal:.1f} "
              f"| {result['seconds'] / ideal:.2f}x | {result['services'] / result['seconds']:.0f} | {ratio} "
              f"| {cpu.own / result['services'] * 1000:.1f} | {emulator} |")
    print("\nvs ideal: wall time over ceil(services / concurrency) x 100 ms; 1.00x is the ideal. "
          f"CPU over {os.cpu_count()} CPUs.")
    print(f"Reference services without a free probe, given the full check here: {', '.join(no_probe) or 'none'} "
          f"({len(no_probe)} of 62 templates).")
    print("\nWhere a run's time goes: each check on the pool's threads; the results of the checks that finished "
          "together stored in one transaction on the run's own thread\n")
    print("| run | statuses | one check p50 ms | p95 ms | batches | results per batch | storing one batch p50 ms "
          "| p95 ms | storing all results s | of the wall |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, result in ((f"{wide['services']} at {CONCURRENCY}", wide), (f"{serial['services']} at 1", serial)):
        checks, records = result["checks"], result["records"]
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(result["statuses"].items()))
        sizes = result["batch_sizes"]
        print(f"| {label} | {statuses} | {_ms(checks, 0.5):.0f} | {_ms(checks, 0.95):.0f} | {len(sizes)} "
              f"| {sum(sizes) / len(sizes):.1f} | {_ms(records, 0.5):.1f} | {_ms(records, 0.95):.1f} "
              f"| {sum(records):.2f} | {sum(records) / result['seconds']:.0%} |")
    print(f"\nbaseline statuses {floor['statuses']}; stored: "
          + ", ".join(f"{n} {what}" for what, n in stored.items()))
    print(f"\nproblems: {len(problems)}; this section took {seconds:.0f} s "
          "(test database, catalog, services, gunicorn start and stop included)")
    if problems:
        for problem in problems[:10]:
            print(f"  {problem}")
        print(f"\nthe emulator's log ends with:\n{log_tail}")
        raise SystemExit(f"health runs bench: {len(problems)} problems (must be 0)")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

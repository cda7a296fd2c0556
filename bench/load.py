"""Load: the paid token call at rising concurrency, against its upstream alone on the same gunicorn.

Part of `make bench` (bench/run.py calls main() as "load"); see bench/README.md, "Load".

Two servers, each gunicorn in Server402's production configuration: `gunicorn server402.wsgi` started in the
repository, so it reads ./gunicorn.conf.py (WEB_CONCURRENCY workers x WEB_THREADS gthreads, keep-alive 75 s,
max-requests 10,000, JSON logs with one access line per request), sandbox mode, on a test database of its own
(paid_call.test_database: SQLite, or `test_<name>` of DATABASE_URL; REDIS_URL is passed on, as the cache and
rate-limit store):

- Server402, whose upstream endpoint is the second server;
- the sandbox emulator of Alibaba Cloud's gateway (the same app, used for nothing else), so that Server402's
  upstream calls do not wait for threads its own load holds.

At each of BENCH_LOAD_LEVELS keep-alive connections (default 1,2,4,8,16,32,64), http_load's closed loop for
BENCH_LOAD_SECONDS (default 60) per series, the two series taking turns (paid first, then baseline first at the
next level, so drift falls on both):

- paid: `POST /api/tools/celebrity-recognition` with `{"ImageURL": ...}`, `Authorization: Bearer <key>` and
  `X-Payment-Token`. Each connection is an agent of its own: its own API key (no rate limit, no quota) and its
  own token, a payment marked paid for a million calls (paid_call.paid_token). BENCH_LOAD_TOKENS=shared gives
  every connection the same key and token instead (one agent, every call on one payment row).
- baseline: a signed DetectCelebrity straight to the emulator's gunicorn, signed afresh per request by the
  app's own signing (each needs its own nonce), parameters placed as the pipeline places them: the upstream
  call the paid call wraps, without the paid pipeline and without the extra hop.

Each series is warmed up first, BENCH_LOAD_WARM_UP_SECONDS (default 5) at the highest level. Per level:
answers per second, p50/p95/p99 latency (client clock, send to answer read in full, answers that passed),
errors, and the CPU time of each process group (Server402, emulator), PostgreSQL, Redis and the client per
answer, with the machine's busy and steal share (/proc, Linux).

Every answer is checked: a paid answer must be a 200 with `data.Action == "DetectCelebrity"` and an
X-Payment-Remaining-Calls header, a baseline answer a 200 with a RequestId. Afterwards the database must hold one
succeeded call record and one used token call per paid answer, and no call left in progress. Any error fails
the bench after the figures are printed.

BENCH_LOAD_PROFILE=<connections> then runs the paid series once more at that level for
BENCH_LOAD_PROFILE_SECONDS (default 30) under py-spy (bench/requirements.txt), sampling Server402's workers
from outside (no change to the app): which functions hold the GIL, per paid call.

BENCH_LOAD_COMPARE=<another checkout> measures a change: that checkout's Server402 is served beside this one
(same database, emulator and tokens), and instead of the levels above the paid series runs on both, in rounds
of BENCH_LOAD_COMPARE_ROUND_SECONDS (default 10) taking turns (A B B A ...), BENCH_LOAD_SECONDS each per level,
so the drift of a shared machine falls on both alike. The CPU of each round is counted for the server loaded.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/load.py`.
"""

import itertools
import json
import os
import runpy
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

import http_load  # noqa: E402  (bench/, beside this file)
import jobs_throughput  # noqa: E402
import paid_call  # noqa: E402
import x402_throughput  # noqa: E402
from catalog import aliyun_client  # noqa: E402
from catalog.models import Service  # noqa: E402
from payments import credentials  # noqa: E402
from payments.models import Payment, ToolCall  # noqa: E402

SERVICE_ID, ACTION, IMAGE_URL = paid_call.SERVICE_ID, paid_call.ACTION, paid_call.IMAGE_URL
LEVELS = tuple(int(n) for n in os.environ.get("BENCH_LOAD_LEVELS", "1,2,4,8,16,32,64").split(","))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "60"))
WARM_UP_SECONDS = float(os.environ.get("BENCH_LOAD_WARM_UP_SECONDS", "5"))
SHARED_TOKEN = os.environ.get("BENCH_LOAD_TOKENS", "per-connection") == "shared"
PROFILE_LEVEL = int(os.environ.get("BENCH_LOAD_PROFILE", "0"))
PROFILE_SECONDS = float(os.environ.get("BENCH_LOAD_PROFILE_SECONDS", "30"))
PROFILE_RATE = 200  # samples per second and process
# Another checkout (the code before a change) served beside this one, the paid series taking turns on both.
COMPARE_ROOT = Path(os.environ["BENCH_LOAD_COMPARE"]).resolve() if os.environ.get("BENCH_LOAD_COMPARE") else None
COMPARE_ROUND_SECONDS = float(os.environ.get("BENCH_LOAD_COMPARE_ROUND_SECONDS", "10"))
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
# Doubling the connections must bring at least this much more throughput, or the level before it saturated.
GROWTH_FLOOR = 1.10
PAID, BASELINE = "paid", "baseline"


def production_gunicorn_start(port: int, db_url: str, log_path: Path, *, extra_env: dict | None = None,
                              root: Path = ROOT):
    """`gunicorn server402.wsgi` as production starts it in the checkout `root`: every setting from its
    ./gunicorn.conf.py and the environment."""
    if not (root / GUNICORN_CONF.name).exists():
        raise RuntimeError(f"{root / GUNICORN_CONF.name} is missing: the load bench measures the production "
                           "configuration")
    env = {"WEB_BIND": f"127.0.0.1:{port}", "LOG_FORMAT": "json", **(extra_env or {})}
    return paid_call.server_start([sys.executable, "-m", "gunicorn", "server402.wsgi"],
                                  paid_call.server_env(port, db_url, env), log_path, cwd=root)


def production_sizing() -> dict:
    """What gunicorn.conf.py gives in this environment: workers, threads, max_requests."""
    conf = runpy.run_path(str(GUNICORN_CONF))
    return {name: conf[name] for name in ("workers", "threads", "max_requests", "keepalive")}


# --- The requests ----------------------------------------------------------------------------------------


def _text(body: bytes) -> str:
    return " ".join(body.decode(errors="replace").split())[:300]


def paid_check(status: int, headers, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {_text(body)}"
    if not headers.get("X-Payment-Remaining-Calls"):
        return "200 without X-Payment-Remaining-Calls"
    action = json.loads(body).get("data", {}).get("Action")
    return None if action == ACTION else f"data.Action is {action!r}, not {ACTION!r}"


def baseline_check(status: int, headers, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {_text(body)}"
    return None if json.loads(body).get("RequestId") else f"no RequestId: {_text(body)}"


class PerConnection:
    """A request maker for http_load: each sending thread (one connection) always sends its own request."""

    def __init__(self, requests: list[http_load.Request]):
        self.requests, self.local, self.taken = requests, threading.local(), itertools.count()

    def __call__(self) -> http_load.Request:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.requests[next(self.taken) % len(self.requests)]
        return request


def paid_requests(service: Service, count: int) -> tuple[list[http_load.Request], list[str]]:
    """`count` agents' requests (one key and one token each; one shared when BENCH_LOAD_TOKENS=shared), and
    the tokens' payment ids."""
    body = json.dumps({"ImageURL": IMAGE_URL}).encode()
    requests, payment_ids = [], []
    for _ in range(1 if SHARED_TOKEN else count):
        secret, token = paid_call.paid_token(service)
        payment_ids.append(credentials.payment_token_id(token))
        requests.append(http_load.Request("POST", f"/api/tools/{SERVICE_ID}", body, {
            "Content-Type": "application/json", "Authorization": f"Bearer {secret}", "X-Payment-Token": token}))
    return requests, payment_ids


def baseline_request_maker(service: Service):
    """A function making a freshly signed DetectCelebrity for the emulator, as the app's upstream call is made.

    Call it with ALIBABA_CLOUD_ENDPOINT pointing at the emulator. aliyun_client._signed_request is the one
    the app sends through; using it here keeps the baseline's request byte for byte the app's.
    """
    method = (service.upstream_method or "POST").upper()
    query, form = aliyun_client.request_parameters(method, service.upstream_parameters or {}, {"ImageURL": IMAGE_URL})
    keys = aliyun_client._credentials()

    def make() -> http_load.Request:
        signed = aliyun_client._signed_request(method, service.upstream_product, service.upstream_version,
                                               service.upstream_action, query, form, keys)
        return http_load.Request(method, signed.url.raw_path.decode(), signed.content, dict(signed.headers))

    return make


# --- Measuring -------------------------------------------------------------------------------------------


def steal_seconds() -> float | None:
    """CPU seconds the host took from this VM so far (/proc/stat's steal); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Level:
    """One series at one concurrency: the run (answers, errors, latencies) and the CPU seconds spent meanwhile."""

    connections: int
    run: http_load.Run
    cpu: dict = field(default_factory=dict)

    def percentile(self, percent: int) -> float | None:
        samples = self.run.latencies_ms
        if len(samples) < 2:
            return samples[0] if samples else None
        return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]

    def cpu_ms_per_answer(self, name: str) -> float | None:
        seconds = self.cpu.get(name)
        return None if seconds is None or not self.run.answers else seconds * 1000 / self.run.answers

    def share(self, name: str) -> float | None:
        """A machine-wide figure (busy, steal) as a share of the CPUs' time while timing."""
        seconds, wall = self.cpu.get(name), self.cpu.get("wall")
        return None if seconds is None or not wall else seconds / (wall * os.cpu_count())


def workers_cpu_seconds(group: int) -> dict[int, float]:
    """CPU seconds so far of each process of a process group but its leader (gunicorn's workers)."""
    seconds = {}
    for path in Path("/proc").iterdir():
        if not path.name.isdigit() or int(path.name) == group:
            continue
        try:
            fields = (path / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[2]) == group:
            seconds[int(path.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def workers_booted(log_path: Path) -> int:
    """How many workers the gunicorn writing `log_path` has booted so far (its error log, which the bench keeps)."""
    try:
        return log_path.read_text(errors="replace").count("Booting worker with pid")
    except OSError:
        return 0


def timed(groups: dict[str, int], connections: int, load, log_path: Path) -> Level:
    """Run `load()` (an http_load.Run) and count the CPU time of every process group and server meanwhile,
    how Server402's workers (groups["Server402"], logging to `log_path`) shared theirs, and their restarts."""
    booted = workers_booted(log_path)
    workers_before = workers_cpu_seconds(groups["Server402"])
    before = {**jobs_throughput.cpu_now(groups), "steal": steal_seconds()}
    run = load()
    after = {**jobs_throughput.cpu_now(groups), "steal": steal_seconds()}
    workers_after = workers_cpu_seconds(groups["Server402"])
    cpu = {name: None if before[name] is None or after[name] is None else after[name] - before[name]
           for name in before}
    # A worker restarted meanwhile (max_requests) counts from its start; the one it replaced is left out.
    spent = sorted((seconds - workers_before.get(pid, 0.0) for pid, seconds in workers_after.items()), reverse=True)
    cpu["busiest worker"] = spent[0] / sum(spent) if spent and sum(spent) > 0 else None
    cpu["workers started"] = workers_booted(log_path) - booted  # restarts after max_requests
    return Level(connections, run, cpu)


@dataclass
class Setup:
    server: x402_throughput.Served
    emulator: x402_throughput.Served
    groups: dict[str, int]
    paid: list[http_load.Request]
    baseline: object  # the baseline's request maker

    def load(self, kind: str, connections: int, seconds: float) -> http_load.Run:
        if kind == PAID:
            return http_load.for_duration(self.server.port, PerConnection(self.paid), paid_check,
                                          connections=connections, seconds=seconds)
        return http_load.for_duration(self.emulator.port, self.baseline, baseline_check, connections=connections,
                                      seconds=seconds)


def measure(setup: Setup) -> tuple[dict[str, list[Level]], list[http_load.Run]]:
    """(kind -> its Level per concurrency, the warm-up runs)."""
    warm_ups = [setup.load(kind, max(LEVELS), WARM_UP_SECONDS) for kind in (PAID, BASELINE)]
    figures = {PAID: [], BASELINE: []}
    for index, connections in enumerate(LEVELS):
        for kind in (PAID, BASELINE) if index % 2 == 0 else (BASELINE, PAID):
            figures[kind].append(timed(setup.groups, connections,
                                       lambda kind=kind, n=connections: setup.load(kind, n, SECONDS),
                                       setup.server.log_path))
            level = figures[kind][-1]
            print(f"  load: {kind} x{connections}: {level.run.per_second:.1f} per s, "
                  f"p50 {level.percentile(50) or 0:.1f} ms, {level.run.failure_count} errors", flush=True)
    return figures, warm_ups


def merged(levels: list[Level]) -> Level:
    """Rounds of one series at one concurrency as one Level: answers, errors, seconds, latencies, CPU added."""
    run = http_load.Run()
    for level in levels:
        run.answers += level.run.answers
        run.failure_count += level.run.failure_count
        run.failures += level.run.failures[:http_load.MAX_FAILURES_KEPT - len(run.failures)]
        run.seconds += level.run.seconds
        run.latencies_ms += level.run.latencies_ms
    names = {name for level in levels for name in level.cpu} - {"busiest worker"}
    cpu = {name: None if any(level.cpu.get(name) is None for level in levels)
           else sum(level.cpu[name] for level in levels) for name in names}
    return Level(levels[0].connections, run, cpu)


THIS, OTHER = "this checkout", "BENCH_LOAD_COMPARE"


def compare(setup: Setup, other: x402_throughput.Served) -> tuple[dict[str, list[Level]], list[http_load.Run]]:
    """The paid series on this checkout's Server402 and on the other's, in rounds of COMPARE_ROUND_SECONDS
    taking turns (A B B A ...) for SECONDS each per level: (checkout -> its Level per concurrency, warm-ups)."""
    servers = {THIS: setup.server, OTHER: other}

    def load(name: str, connections: int, seconds: float) -> http_load.Run:
        return http_load.for_duration(servers[name].port, PerConnection(setup.paid), paid_check,
                                      connections=connections, seconds=seconds)

    warm_ups = [load(name, max(LEVELS), WARM_UP_SECONDS) for name in servers]
    rounds = max(1, round(SECONDS / COMPARE_ROUND_SECONDS))
    figures = {THIS: [], OTHER: []}
    for connections in LEVELS:
        timed_rounds = {THIS: [], OTHER: []}
        for round_ in range(rounds):
            for name in (THIS, OTHER) if round_ % 2 == 0 else (OTHER, THIS):
                # CPU_NAMES' "Server402" is the server loaded in this round; the idle one is counted apart.
                idle = OTHER if name == THIS else THIS
                groups = {"Server402": servers[name].process_group, "idle Server402": servers[idle].process_group,
                          "emulator": setup.emulator.process_group}
                timed_rounds[name].append(timed(groups, connections, lambda n=name, c=connections: load(
                    n, c, SECONDS / rounds), servers[name].log_path))
        for name in servers:
            figures[name].append(merged(timed_rounds[name]))
            level = figures[name][-1]
            print(f"  load: {name} x{connections}: {level.run.per_second:.1f} per s, "
                  f"p50 {level.percentile(50) or 0:.1f} ms, {level.run.failure_count} errors", flush=True)
    return figures, warm_ups


def compare_report(figures: dict[str, list[Level]]) -> None:
    print(f"\nThis checkout against BENCH_LOAD_COMPARE={COMPARE_ROOT}: the paid series in rounds of "
          f"{SECONDS / max(1, round(SECONDS / COMPARE_ROUND_SECONDS)):g} s taking turns, {SECONDS:g} s each per "
          "level; CPU ms per answer of the loaded Server402, PostgreSQL and the emulator\n")
    print("| connections | checkout | per s | p50 ms | p95 ms | p99 ms | errors | Server402 CPU ms | PostgreSQL "
          "CPU ms | emulator CPU ms | per s vs other | Server402 CPU vs other | Server402 + PostgreSQL CPU vs other |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for ours, theirs in zip(figures[THIS], figures[OTHER], strict=True):
        for name, level, other in ((THIS, ours, theirs), (OTHER, theirs, ours)):
            def ratio(value, reference):
                return "n/a" if value is None or not reference else f"{value / reference:.2f}x"

            def both(lvl):
                parts = [lvl.cpu_ms_per_answer("Server402"), lvl.cpu_ms_per_answer("PostgreSQL")]
                return None if None in parts else sum(parts)

            print(f"| {level.connections} | {name} | {_rate(level.run.per_second)} | {_cell(level.percentile(50))} "
                  f"| {_cell(level.percentile(95))} | {_cell(level.percentile(99))} | {level.run.failure_count} "
                  f"| {_cell(level.cpu_ms_per_answer('Server402'), 2)} "
                  f"| {_cell(level.cpu_ms_per_answer('PostgreSQL'), 2)} "
                  f"| {_cell(level.cpu_ms_per_answer('emulator'), 2)} "
                  f"| {ratio(level.run.per_second, other.run.per_second)} "
                  f"| {ratio(level.cpu_ms_per_answer('Server402'), other.cpu_ms_per_answer('Server402'))} "
                  f"| {ratio(both(level), both(other))} |")


def records_check(payment_ids: list[str], paid_answers: int) -> list[str]:
    """Server402's own account: one succeeded record and one used token call per paid answer, nothing open."""
    calls = ToolCall.objects.filter(service_id=SERVICE_ID)
    succeeded = calls.filter(outcome=ToolCall.Outcome.SUCCEEDED).count()
    open_calls = calls.filter(outcome=ToolCall.Outcome.IN_PROGRESS).count()
    used = Payment.objects.filter(pk__in=payment_ids).aggregate(used=Sum("used_calls"))["used"] or 0
    if succeeded == used == paid_answers and not open_calls and calls.count() == succeeded:
        return []
    return [f"the database holds {calls.count()} call records ({succeeded} succeeded, {open_calls} in progress) "
            f"and {used} used token calls for {paid_answers} paid answers"]


# --- Profile ---------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    level: Level
    samples: Counter  # stack (tuple of frames, outermost first) -> samples, Server402's workers only
    workers: Counter  # worker pid -> samples
    error: str = ""


def profile(setup: Setup, connections: int) -> Profile | None:
    """The paid series once more at `connections`, Server402's gunicorn sampled by py-spy meanwhile."""
    binary = py_spy()
    if binary is None:
        print("\nprofile skipped: py-spy not found (pip install -r bench/requirements.txt)")
        return None
    out = Path(settings.VAR_DIR) / "bench-load-py-spy.txt"
    master = setup.server.process_group
    # --gil: only the thread holding the GIL, i.e. where each worker's Python time goes; --nonblocking: the
    # workers are not paused to be sampled. The duration covers the run; samples outside it are idle.
    command = [binary, "record", "--pid", str(master), "--subprocesses", "--gil", "--nonblocking", "--nolineno",
               "--format", "raw", "--rate", str(PROFILE_RATE), "--duration", str(int(PROFILE_SECONDS) + 2),
               "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(1.5)  # py-spy attaches to each process
    level = timed(setup.groups, connections, lambda: setup.load(PAID, connections, PROFILE_SECONDS),
                  setup.server.log_path)
    output = spy.communicate(timeout=PROFILE_SECONDS + 60)[0].decode(errors="replace")
    samples: Counter = Counter()
    workers: Counter = Counter()
    if spy.returncode != 0 or not out.exists():
        return Profile(level, samples, workers, f"py-spy exited with {spy.returncode}: {output[-1000:]}")
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        # A worker's stacks start with its parents' process frames, then its own: `process <pid>:"<cmdline>"`.
        processes = list(itertools.takewhile(lambda frame: frame.startswith("process "), frames))
        pid = int(processes[-1].split(":", 1)[0].split()[1]) if processes else master
        if pid != master:  # the arbiter's loop is not a call's cost
            samples[tuple(frames[len(processes):])] += int(count)
            workers[pid] += int(count)
    out.unlink(missing_ok=True)
    return Profile(level, samples, workers)


# Where a paid call's time goes: the pipeline's steps (payments.pipeline) and what surrounds them.
STEPS = [
    ("gunicorn: a request on its thread (ThreadWorker.handle)", "ThreadWorker.handle (gunicorn/workers/gthread.py)"),
    ("Django: middleware, URL, view (WSGIHandler.__call__)", "WSGIHandler.__call__ (django/core/handlers/wsgi.py)"),
    ("the view: ToolCallApi.post", "ToolCallApi.post (payments/api/views.py)"),
    ("paid_call_run", "paid_call_run (payments/pipeline.py)"),
    ("  _resolve: service_lookup", "_resolve (payments/pipeline.py)"),
    ("  _authorize: the API key", "_authorize (payments/pipeline.py)"),
    ("  _validate: the input", "_validate (payments/pipeline.py)"),
    ("  _pay: reserve the token call, open the record", "_pay (payments/pipeline.py)"),
    ("  _run: upstream call, close the record, envelope", "_run (payments/pipeline.py)"),
    ("    of which aliyun_client.call (sign, send, parse)", "call (catalog/aliyun_client.py)"),
    ("    of which tool_call_finish", "tool_call_finish (payments/services.py)"),
    ("  tool_call_stats_record (hourly statistics)", "tool_call_stats_record (health/services.py)"),
    ("DRF: rendering the answer (finalize_response)", "APIView.finalize_response (rest_framework/views.py)"),
    ("logging (the access line and any other)", "Logger.handle (logging/__init__.py)"),
    ("every SQL statement's execution (CursorWrapper.execute)", "CursorWrapper.execute (django/db/backends/utils.py)"),
]


def profile_report(result: Profile) -> None:
    level, samples = result.level, result.samples
    cpu_ms = level.cpu_ms_per_answer("Server402")
    print(f"\nProfile: paid series at {level.connections} connections for {PROFILE_SECONDS:g} s under py-spy "
          f"(--gil --nonblocking, {PROFILE_RATE} samples per s per process): {level.run.per_second:.1f} per s, "
          f"p50 {_cell(level.percentile(50))} ms, {level.run.failure_count} errors; Server402 CPU "
          f"{_cell(cpu_ms, 2)} ms per answer")
    if result.error:
        print(f"  {result.error}")
        return
    total = sum(samples.values())
    if not total or cpu_ms is None:
        print("  no samples")
        return
    inclusive: Counter = Counter()
    own: Counter = Counter()
    for stack, count in samples.items():
        for frame in set(stack):
            inclusive[frame] += count
        if stack:
            own[stack[-1]] += count
    shares = ", ".join(f"{count / total:.0%}" for _, count in result.workers.most_common())
    print(f"\n{total} samples of a thread holding the GIL in Server402's workers (by worker: {shares}). A "
          f"function's share of them, times Server402's CPU per answer ({cpu_ms:.2f} ms), is its CPU ms per paid "
          "call (samples also land on a thread that holds the GIL while its process waits for a CPU, alike for "
          "every function).\n")

    def row(label: str, count: int) -> str:
        return f"| {label} | {count / total * cpu_ms:.2f} | {count / total:.1%} |"

    print("| step | CPU ms per call | share |\n|---|---:|---:|")
    for label, frame in STEPS:
        print(row(label, inclusive[frame]))
    print("\nTop functions by own time (the frame on top of the stack):\n")
    print("| function | CPU ms per call | share |\n|---|---:|---:|")
    for frame, count in own.most_common(25):
        print(row(frame, count))
    print("\nTop functions by inclusive time, below the view:\n")
    print("| function | CPU ms per call | share |\n|---|---:|---:|")
    below = inclusive["ToolCallApi.post (payments/api/views.py)"]
    for frame, count in [(frame, count) for frame, count in inclusive.most_common() if count < below][:40]:
        print(row(frame, count))


# --- Main and report -------------------------------------------------------------------------------------


def main() -> None:
    """Measure and print; raise SystemExit when any answer or record was wrong. Cleans up after itself."""
    started = time.monotonic()
    namespace = f"bench-load-{os.getpid()}"
    with paid_call.test_database("bench-load.sqlite3") as db_url, ExitStack() as stack:
        if settings.REDIS_URL:
            stack.enter_context(jobs_throughput.cache_namespace(namespace))  # left last, once both servers stopped
        service = Service.objects.select_related("pricing_policy").get(id=SERVICE_ID)
        paid, payment_ids = paid_requests(service, max(LEVELS))
        common = {"CACHE_KEY_PREFIX": namespace, "HEALTH_CHECK_INTERVAL_SECONDS": "0"}
        emulator = stack.enter_context(x402_throughput.serving("emulator", production_gunicorn_start, db_url,
                                                               extra_env=common))
        upstream = f"http://127.0.0.1:{emulator.port}/sandbox/aliyun/{{product}}"
        server = stack.enter_context(x402_throughput.serving(
            "Server402", production_gunicorn_start, db_url, extra_env={**common, "ALIBABA_CLOUD_ENDPOINT": upstream}))
        other = None
        if COMPARE_ROOT:
            other = stack.enter_context(x402_throughput.serving(
                f"Server402 ({COMPARE_ROOT})", production_gunicorn_start, db_url,
                extra_env={**common, "ALIBABA_CLOUD_ENDPOINT": upstream}, root=COMPARE_ROOT))
        stack.enter_context(override_settings(ALIBABA_CLOUD_ENDPOINT=upstream))
        groups = {"Server402": server.process_group, "emulator": emulator.process_group}
        setup = Setup(server, emulator, groups, paid, baseline_request_maker(service))
        failures, figures, warm_ups, profiled = [], {PAID: [], BASELINE: []}, [], None
        try:
            if other is not None:
                figures, warm_ups = compare(setup, other)
            else:
                figures, warm_ups = measure(setup)
            if PROFILE_LEVEL:
                profiled = profile(setup, PROFILE_LEVEL)
        except Exception as error:  # noqa: BLE001 - reported with the logs below, then the bench fails
            failures.append(f"{error.__class__.__name__}: {error}")
        kinds = [THIS, OTHER] if other is not None else [PAID, BASELINE]
        labelled = [(f"{kind} warm-up", run) for kind, run in zip(kinds, warm_ups, strict=False)]
        labelled += [(f"{kind} x{level.connections}", level.run) for kind, levels in figures.items()
                     for level in levels]
        labelled += [(f"paid x{profiled.level.connections}, profiled", profiled.level.run)] if profiled else []
        runs = [run for _, run in labelled]
        failures += [f"{label}: {failure}" for label, run in labelled for failure in run.failures]
        # Every series but the baseline spends the agents' tokens.
        paid_runs = [run for label, run in labelled if not label.startswith(BASELINE)]
        failures += records_check(payment_ids, sum(run.answers for run in paid_runs))
        servers = [emulator, server, *([other] if other else [])]
        log_tails = {s.name: s.log_path.read_text(errors="replace")[-3000:] for s in servers} if failures else {}
    if other is not None:
        compare_report(figures)
        figures = {PAID: [], BASELINE: []}
    report(figures, profiled, runs, failures, log_tails, time.monotonic() - started)


def _cell(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _share(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}"


def saturation(levels: list[Level]) -> Level | None:
    """The first level after which doubling the connections brings less than GROWTH_FLOOR more throughput."""
    for level, following in itertools.pairwise(levels):
        if following.run.per_second < level.run.per_second * GROWTH_FLOOR:
            return level
    return None


def saturation_note(kind: str, levels: list[Level], slots: int) -> str:
    level = saturation(levels)
    if level is None:
        return f"{kind}: throughput still grew by {GROWTH_FLOOR - 1:.0%} or more at every level measured."
    following = levels[levels.index(level) + 1]
    busy = level.share("machine")
    workers = (f", and Server402's busiest worker took {_share(level.cpu.get('busiest worker'))} of its workers' CPU"
               if kind == PAID else "")
    return (f"{kind}: throughput stops growing at {level.connections} connections ({_rate(level.run.per_second)} "
            f"per s; {following.connections} give {_rate(following.run.per_second)} per s, "
            f"{following.run.per_second / level.run.per_second - 1:+.0%}, while p50 goes from "
            f"{_cell(level.percentile(50))} to {_cell(following.percentile(50))} ms). The CPUs were "
            f"{_share(busy)} busy at that level (steal {_share(level.share('steal'))}){workers}; the server has "
            f"{slots} request slots (workers x threads).")


CPU_NAMES = ["Server402", "emulator", "PostgreSQL", "Redis", "client (this process)"]


def report(figures: dict[str, list[Level]], profiled: Profile | None, runs: list[http_load.Run],
           failures: list[str], log_tails: dict, seconds: float) -> None:
    sizing = production_sizing()
    slots = sizing["workers"] * sizing["threads"]
    engine = connection.vendor + (" + Redis" if settings.REDIS_URL else " + file cache")
    tokens = "one shared key and token" if SHARED_TOKEN else "one key and token per connection"
    print(f"\nLoad ({engine}; each server gunicorn.conf.py: {sizing['workers']} workers x {sizing['threads']} threads, "
          f"max_requests {sizing['max_requests']}; {SECONDS:g} s per level and series; {tokens}; "
          f"{os.cpu_count()} CPUs shared by Server402, the emulator, the databases and the client)\n")
    paid, baseline = figures[PAID], figures[BASELINE]
    if paid and len(paid) == len(baseline):
        print("| connections | paid per s | p50 ms | p95 ms | p99 ms | errors | baseline per s | p50 ms | p95 ms "
              "| p99 ms | errors | paid vs baseline per s | p50 vs baseline |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for ours, theirs in zip(paid, baseline, strict=True):
            ratio = ours.run.per_second / theirs.run.per_second if theirs.run.per_second else None
            p50 = (ours.percentile(50) / theirs.percentile(50)
                   if ours.percentile(50) and theirs.percentile(50) else None)
            print(f"| {ours.connections} | {_rate(ours.run.per_second)} | {_cell(ours.percentile(50))} "
                  f"| {_cell(ours.percentile(95))} | {_cell(ours.percentile(99))} | {ours.run.failure_count} "
                  f"| {_rate(theirs.run.per_second)} | {_cell(theirs.percentile(50))} | {_cell(theirs.percentile(95))} "
                  f"| {_cell(theirs.percentile(99))} | {theirs.run.failure_count} | {_cell(ratio, 2)}x "
                  f"| {_cell(p50, 2)}x |")
        print("\nCPU ms per answer, by process, and the machine's busy and steal share while timing:\n")
        print(f"| connections | series | {' | '.join(CPU_NAMES)} | all of these | other processes | busy | steal "
              "| PostgreSQL connections opened | Server402's busiest worker | Server402 workers restarted |")
        print(f"|---:|---|{'---:|' * (len(CPU_NAMES) + 7)}")
        for ours, theirs in zip(paid, baseline, strict=True):
            for kind, level in ((PAID, ours), (BASELINE, theirs)):
                cells = [level.cpu_ms_per_answer(name) for name in CPU_NAMES]
                known = [cell for cell in cells if cell is not None]
                busy, steal = level.share("machine"), level.share("steal")
                machine = level.cpu_ms_per_answer("machine")
                other = None if machine is None else max(0.0, machine - sum(known))
                print(f"| {level.connections} | {kind} | {' | '.join(_cell(cell, 2) for cell in cells)} "
                      f"| {_cell(sum(known), 2)} | {_cell(other, 2)} | {_share(busy)} | {_share(steal)} "
                      f"| {level.cpu.get('sessions') if level.cpu.get('sessions') is not None else 'n/a'} "
                      f"| {_share(level.cpu.get('busiest worker')) if kind == PAID else ''} "
                      f"| {level.cpu.get('workers started', '') if kind == PAID else ''} |")
        print()
        print(saturation_note("paid", paid, slots))
        print(saturation_note("baseline", baseline, slots))
    if profiled:
        profile_report(profiled)
    requests = sum(run.answers + run.failure_count for run in runs)
    print(f"\nErrors: {sum(run.failure_count for run in runs)} of {requests} requests (warm-ups included); this "
          f"section took {seconds:.0f} s (test database, two servers and warm-ups included)")
    x402_throughput.fail_on(failures, log_tails, bench="load bench")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

"""Async jobs throughput: paid calls accepted with `Prefer: respond-async` (202) and completed by two Celery
workers, per second, against the same calls made synchronously (the connection held) through the same
gunicorn in the same run.

Part of `make bench` (bench/run.py calls main() as "jobs"); see bench/README.md, "Jobs".

Processes, each in a session of its own (stopped with its process group on exit or failure):

- Server402 under gunicorn, 2 workers x 2 x BENCH_JOBS_CONCURRENCY threads, sandbox mode, on a test
  database of its own (paid_call.test_database). Each worker has a thread for every client connection:
  keep-alive connections are not spread evenly over the workers, and a worker holding more connections
  than threads made some synchronous calls of the async tool wait for another's 0.75 s (half the calls
  per s in some runs). The client's connections cap the calls in flight instead;
- the sandbox emulator of Alibaba Cloud on a second gunicorn (2 x 16 threads, --keep-alive 75), as
  mcp_throughput.py does: a synchronous call of an async action holds its web thread while it polls, and
  with every thread of one gunicorn held the polls could not be answered;
- two `celery worker` processes (this file with --celery-worker: Celery's own worker, with timers
  around the upstream client, its sleeps and the SQL statements; see worker_main), each
  `--pool threads --concurrency BENCH_JOBS_CONCURRENCY` (BENCH_JOBS_POOL=prefork to compare). Threads: a
  job spends most of its slot waiting (on the upstream, on the sleeps between polls of an async action,
  on the database), so a slot should be cheap; one worker process per CPU still uses both CPUs. The
  workers have 2 x BENCH_JOBS_CONCURRENCY slots (8 by default), as many as the client has connections
  for the held-connection baseline: the comparison is at equal concurrency.

Everything on the configured database and REDIS_URL (the broker, the cache and the emulator's async-job
state), under a CACHE_KEY_PREFIX of this run's own. Async actions are polled sped up:
ALIBABA_CLOUD_POLL_SECONDS=0.1 (default 0.5), ALIBABA_CLOUD_POLL_MAX_SECONDS=1; the emulator answers
QUEUING, PROCESSING, then PROCESS_SUCCESS, so such a job is one submission and three polls after
0.1 + 0.2 + 0.4 s of waits.

For each tool, celebrity-recognition (a synchronous upstream action, DetectCelebrity) and ad-image-tagging
(an async one, TaggingAdImage):

- jobs: a burst of BENCH_JOBS jobs (BENCH_JOBS_ASYNC for the async tool), POSTed by a closed loop of
  2 x BENCH_JOBS_CONCURRENCY keep-alive connections with an API key, a paid token and
  `Prefer: respond-async`; meanwhile one more connection reads the oldest unfinished jobs 10 at a time
  (`GET /api/jobs?ids=`, the API key), again at once when one of them ended, else after 20 ms, until
  every job succeeded or failed, or none ended for BENCH_JOBS_STALL_SECONDS (default 30). Submitted per
  s: 202s over first submission to last 202; completed per s: succeeded jobs over first submission to the
  read that saw the last one end;
- baseline: as many synchronous paid calls of the same tool (no Prefer) through the same gunicorn, by a
  closed loop of as many connections: calls per s;
- with one worker (before the second starts) a burst of half as many jobs (BENCH_JOBS_ONE_WORKER=0 skips
  it): the scaling from one worker to two;
- one at a time, BENCH_JOBS_SEQUENTIAL jobs (default 20; half for the async tool), each read every 20 ms
  until it ended before the next is submitted, against as many synchronous calls one at a time: a job's
  latency on an idle queue.

Each part is warmed up first. Every answer is checked (202 and a queued job; each job read until it
succeeded with the tool's action in its result; 200 with the action for a synchronous call); afterwards
the database must hold one succeeded call record and one used token call per job and per synchronous
call, and every job succeeded at its first attempt. Anything else fails the bench.

Where the time goes: the CPU time of each process group (web, emulator, workers), of PostgreSQL and
Redis, and of this process (the client), per completed job; and each job's time in its worker, split
into upstream requests, the sleeps between polls, SQL statements and the rest (Python: the pipeline,
the ORM, signing), from the worker's timers.

It needs REDIS_URL, and is skipped without it: the file broker is polled once a second.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/jobs_throughput.py`.
"""

import http.client
import json
import os
import re
import statistics
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER_FLAG = "--celery-worker"
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

import mcp_throughput  # noqa: E402  (bench/, beside this file)
import paid_call  # noqa: E402
import x402_throughput  # noqa: E402
from catalog.models import Service  # noqa: E402
from jobs.models import Job  # noqa: E402

TOOLS = (("celebrity-recognition", "DetectCelebrity", "sync"), ("ad-image-tagging", "TaggingAdImage", "async"))
IMAGE_URL = paid_call.IMAGE_URL
JOBS = int(os.environ.get("BENCH_JOBS", "500"))
ASYNC_JOBS = int(os.environ.get("BENCH_JOBS_ASYNC", "200"))
SEQUENTIAL = int(os.environ.get("BENCH_JOBS_SEQUENTIAL", "20"))
ONE_WORKER = os.environ.get("BENCH_JOBS_ONE_WORKER", "1") != "0"
POOL = os.environ.get("BENCH_JOBS_POOL", "threads")
CONCURRENCY = int(os.environ.get("BENCH_JOBS_CONCURRENCY", str(paid_call.THREADS)))
STALL_SECONDS = float(os.environ.get("BENCH_JOBS_STALL_SECONDS", "30"))
WORKERS = 2
WEB_WORKERS = paid_call.WORKERS
CONNECTIONS = WORKERS * CONCURRENCY
EMULATOR_THREADS = 16
POLL_SECONDS, POLL_MAX_SECONDS = 0.1, 1.0
BATCH = 10  # GET /api/jobs?ids= reads at most 10
IDLE_PAUSE = 0.02
WORKER_START_SECONDS = 60
FAILURES_KEPT = 20


# --- The worker ------------------------------------------------------------------------------------------


def worker_main(argv: list[str]) -> None:
    """`celery worker` with timers: per job, the time in upstream requests (aliyun_client.call), in the
    upstream client's sleeps outside a request (the waits between polls), in SQL statements, and the task's
    wall and CPU (its thread's) time. One JSON line per job goes to BENCH_JOBS_STATS.

    The functions are wrapped, not changed; a wrapper costs two perf_counter() calls.
    """
    import types

    from celery.signals import task_postrun, task_prerun
    from django.db.backends.signals import connection_created

    from catalog import aliyun_client
    from server402.celery import app

    stats_path = Path(os.environ["BENCH_JOBS_STATS"])
    local = threading.local()
    write_lock = threading.Lock()

    def current() -> dict | None:
        return getattr(local, "job", None)

    original_call = aliyun_client.call

    def call(*args, **kwargs):
        job = current()
        start = time.perf_counter()
        if job is not None:
            job["_in_call"] = True
        try:
            return original_call(*args, **kwargs)
        finally:
            if job is not None:
                job["_in_call"] = False
                job["upstream"] += time.perf_counter() - start
                job["upstream_requests"] += 1

    def sleep(seconds: float) -> None:
        job = current()
        start = time.perf_counter()
        try:
            time.sleep(seconds)
        finally:
            if job is not None and not job["_in_call"]:  # a retry's backoff counts as the request's
                job["sleeps"] += time.perf_counter() - start

    # Only aliyun_client's own `time` is replaced: the rest of the process sleeps unobserved.
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.sleep = sleep
    aliyun_client.call, aliyun_client.time = call, clock

    def timed_statement(execute, sql, params, many, context):
        job = current()
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if job is not None:
                elapsed = time.perf_counter() - start
                job["sql"] += elapsed
                job["statements"] += 1
                seconds_count = job["by_statement"].setdefault(statement_shape(sql), [0.0, 0])
                seconds_count[0] += elapsed
                seconds_count[1] += 1

    def on_connection(sender, connection, **kwargs):
        if timed_statement not in connection.execute_wrappers:
            connection.execute_wrappers.append(timed_statement)

    connection_created.connect(on_connection, weak=False)

    def started(sender=None, args=None, **kwargs):
        if sender is not None and sender.name == "jobs.tasks.run_job":
            local.job = {"job": args[0], "start": time.time(), "_perf": time.perf_counter(),
                         "_cpu": time.thread_time(), "_in_call": False, "upstream": 0.0, "upstream_requests": 0,
                         "sleeps": 0.0, "sql": 0.0, "statements": 0, "by_statement": {}}

    def ended(sender=None, retval=None, **kwargs):
        job = current()
        if job is None:
            return
        local.job = None
        job.update(wall=time.perf_counter() - job.pop("_perf"), cpu=time.thread_time() - job.pop("_cpu"),
                   end=time.time(), status=retval, pid=os.getpid())
        job.pop("_in_call")
        line = json.dumps(job) + "\n"
        with write_lock, stats_path.open("a") as stats:
            stats.write(line)

    task_prerun.connect(started, weak=False)
    task_postrun.connect(ended, weak=False)
    app.worker_main(argv=["worker", *argv])


_TABLE = re.compile(r'\b(?:INTO|FROM|UPDATE)\s+"?(\w+)', re.IGNORECASE)


def statement_shape(sql: str) -> str:
    """`UPDATE jobs_job`, `SELECT payments_payment FOR UPDATE`...: a statement's verb and first table."""
    table = _TABLE.search(sql)
    return (f"{sql.split(None, 1)[0].upper() if sql.strip() else '?'} {table.group(1) if table else ''}"
            + (" FOR UPDATE" if "FOR UPDATE" in sql else "")).strip()


@dataclass
class Worker:
    name: str
    process: object
    log_path: Path
    stats_path: Path

    @property
    def process_group(self) -> int:
        return self.process.pid


@contextmanager
def celery_worker(name: str, port: int, db_url: str, env: dict):
    """One `celery worker` (this file, --celery-worker) consuming the default queue; stopped on exit."""
    var = Path(settings.VAR_DIR)
    log_path, stats_path = var / f"bench-jobs-worker-{name}.log", var / f"bench-jobs-worker-{name}.jsonl"
    stats_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, "--pool", POOL,
               "--concurrency", str(CONCURRENCY), "--loglevel", "INFO", "--hostname", f"bench-jobs-{name}@%h",
               # Two workers on one host need not swap state at start-up, nor gossip about each other.
               "--without-mingle", "--without-gossip"]
    process = paid_call.server_start(command, paid_call.server_env(port, db_url, {**env, "BENCH_JOBS_STATS":
                                                                              str(stats_path)}), log_path)
    try:
        deadline = time.monotonic() + WORKER_START_SECONDS
        while " ready." not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker {name} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield Worker(name, process, log_path, stats_path)
    finally:
        paid_call.server_stop(process)


def worker_stats(workers: list[Worker]) -> dict[str, dict]:
    """job id -> what the worker's timers said of its (last) run."""
    stats = {}
    for worker in workers:
        if worker.stats_path.exists():
            for line in worker.stats_path.read_text().splitlines():
                record = json.loads(line)
                record["worker"] = worker.name
                stats[record["job"]] = record
    return stats


# --- The client ------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One burst of jobs, or one run of synchronous calls."""

    label: str
    service_id: str
    kind: str  # "jobs" or "sync"
    workers: int
    count: int
    connections: int
    sent: dict[str, float] = field(default_factory=dict)  # job id -> when its POST went out
    answered: list[float] = field(default_factory=list)  # when each 202 (or 200) came back
    latencies: list[float] = field(default_factory=list)  # sync: each call's seconds
    ended: dict[str, float] = field(default_factory=dict)  # job id -> when a read saw it succeed
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    reads: int = 0
    start: float = 0.0
    cpu: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, problem: str) -> None:
        with self._lock:
            self.failure_count += 1
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append(f"{self.service_id}, {self.label}: {problem}")

    @property
    def submitted_per_second(self) -> float:
        return len(self.answered) / (max(self.answered) - self.start) if self.answered else 0.0

    @property
    def completed_per_second(self) -> float:
        if self.kind == "sync":
            return self.submitted_per_second
        return len(self.ended) / (max(self.ended.values()) - self.start) if self.ended else 0.0


def _text(body: bytes) -> str:
    return " ".join(body.decode(errors="replace").split())[:300]


def closed_loop(port: int, series: Series, connections: int, request, on_answer) -> None:
    """`series.count` requests over `connections` keep-alive connections, each sending its next request as
    soon as the previous answer is read; on_answer(status, body, sent, answered) checks each answer."""
    lock = threading.Lock()
    remaining = [series.count]
    ready = threading.Barrier(connections + 1)

    def loop() -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            client.connect()
        finally:
            ready.wait(timeout=60)
        try:
            while True:
                with lock:
                    if not remaining[0]:
                        return
                    remaining[0] -= 1
                sent = time.perf_counter()
                try:
                    client.request(*request)
                    response = client.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as error:
                    client.close()  # the next request opens a new connection
                    series.fail(f"{error.__class__.__name__}: {error}")
                    continue
                try:
                    on_answer(response.status, body, sent, time.perf_counter())
                except Exception as error:  # noqa: BLE001 - an answer the check cannot read is a failed answer
                    series.fail(f"unreadable answer ({error.__class__.__name__}: {error}): {_text(body)}")
        finally:
            client.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=60)
    series.start = time.perf_counter()
    for thread in threads:
        thread.join()


def tool_request(service_id: str, secret: str, token: str, *, respond_async: bool) -> tuple:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}", "X-Payment-Token": token}
    if respond_async:
        headers["Prefer"] = "respond-async"
    return "POST", f"/api/tools/{service_id}", json.dumps({"ImageURL": IMAGE_URL}).encode(), headers


def sync_calls(port: int, series: Series, action: str, secret: str, token: str) -> Series:
    def on_answer(status: int, body: bytes, sent: float, answered: float) -> None:
        if status != 200:
            return series.fail(f"HTTP {status}: {_text(body)}")
        got = json.loads(body).get("data", {}).get("Action")
        if got != action:
            return series.fail(f"data.Action is {got!r}, not {action!r}")
        with series._lock:
            series.answered.append(answered)
            series.latencies.append(answered - sent)

    closed_loop(port, series, series.connections,
                tool_request(series.service_id, secret, token, respond_async=False), on_answer)
    return series


def _accepted(series: Series, status: int, body: bytes, sent: float, answered: float) -> str | None:
    """Check a submission's answer and note the job; its id, or None when it was refused."""
    if status != 202:
        series.fail(f"submission: HTTP {status}: {_text(body)}")
        return None
    job = json.loads(body)
    if job.get("status") != "queued" or not job.get("jobId") or not job.get("jobSecret"):
        series.fail(f"submission: not a queued job: {_text(body)}")
        return None
    with series._lock:
        series.sent[job["jobId"]] = sent
        series.answered.append(answered)
    return job["jobId"]


def _read(client: http.client.HTTPConnection, series: Series, batch: list[str], action: str,
          secret: str) -> set[str] | None:
    """One GET /api/jobs?ids=: the ids of the batch that ended (noted in the series), None if the read failed."""
    try:
        client.request("GET", f"/api/jobs?ids={','.join(batch)}", headers={"Authorization": f"Bearer {secret}"})
        response = client.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        client.close()
        series.fail(f"read: {error.__class__.__name__}: {error}")
        return None
    now = time.perf_counter()
    series.reads += 1
    if response.status != 200:
        series.fail(f"read: HTTP {response.status}: {_text(body)}")
        return None
    finished = set()
    for record in json.loads(body).get("jobs", []):
        job_id, status = record.get("jobId"), record.get("status")
        if status == "succeeded":
            got = ((record.get("result") or {}).get("data") or {}).get("Action")
            if got != action:
                series.fail(f"job {job_id} succeeded with data.Action {got!r}, not {action!r}")
            series.ended[job_id] = now
            finished.add(job_id)
        elif status not in ("queued", "processing"):
            series.fail(f"job {job_id} is {status}: {json.dumps(record.get('error'))[:300]}")
            finished.add(job_id)
    return finished


def jobs_burst(port: int, series: Series, action: str, secret: str, token: str) -> Series:
    """Submit the burst while one more connection reads the oldest unfinished jobs until all ended."""
    pending: list[str] = []
    submitting = threading.Event()
    submitting.set()

    def on_answer(status: int, body: bytes, sent: float, answered: float) -> None:
        job_id = _accepted(series, status, body, sent, answered)
        if job_id is not None:
            with series._lock:
                pending.append(job_id)

    def read() -> None:
        client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        last_progress = time.perf_counter()
        try:
            while True:
                with series._lock:
                    batch = pending[:BATCH]
                if not batch and not submitting.is_set():
                    return
                if time.perf_counter() - last_progress > STALL_SECONDS:
                    series.fail(f"no job ended for {STALL_SECONDS:g} s; {len(pending)} unfinished")
                    return
                finished = _read(client, series, batch, action, secret) if batch else None
                if finished:
                    last_progress = time.perf_counter()
                    with series._lock:
                        pending[:] = [job_id for job_id in pending if job_id not in finished]
                else:
                    time.sleep(IDLE_PAUSE)
        finally:
            client.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        closed_loop(port, series, CONNECTIONS, tool_request(series.service_id, secret, token, respond_async=True),
                    on_answer)
    finally:
        submitting.clear()
        reader.join()
    return series


def jobs_one_at_a_time(port: int, series: Series, action: str, secret: str, token: str) -> Series:
    """One job at a time: submitted, then read every 20 ms until it ended, then the next."""
    request = tool_request(series.service_id, secret, token, respond_async=True)
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    client.connect()
    series.start = time.perf_counter()
    try:
        for _ in range(series.count):
            sent = time.perf_counter()
            try:
                client.request(*request)
                response = client.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                client.close()
                series.fail(f"{error.__class__.__name__}: {error}")
                continue
            job_id = _accepted(series, response.status, body, sent, time.perf_counter())
            deadline = time.perf_counter() + STALL_SECONDS
            while job_id is not None and time.perf_counter() < deadline:
                if _read(client, series, [job_id], action, secret):
                    break
                time.sleep(IDLE_PAUSE)
            else:
                if job_id is not None:
                    series.fail(f"job {job_id} did not end within {STALL_SECONDS:g} s")
    finally:
        client.close()
    return series


# --- Measuring -------------------------------------------------------------------------------------------


def database_servers_cpu() -> dict[str, float] | None:
    """CPU seconds so far of the local PostgreSQL (every database; with the backends it has reaped, whose time
    moves to the postmaster) and of redis-server; None without Linux's /proc."""
    ticks = {"PostgreSQL": 0, "Redis": 0}
    try:
        paths = [path for path in Path("/proc").iterdir() if path.name.isdigit()]
    except OSError:
        return None
    for path in paths:
        try:
            name = {"postgres": "PostgreSQL", "redis-server": "Redis"}.get((path / "comm").read_text().strip())
            if name is None:
                continue
            fields = (path / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        # utime, stime, and the reaped children's
        ticks[name] += sum(int(value) for value in fields[11:15])
    return {name: value / os.sysconf("SC_CLK_TCK") for name, value in ticks.items()}


def database_sessions() -> int | None:
    """Connections opened so far to this PostgreSQL database (pg_stat_database.sessions); None elsewhere."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def cpu_now(groups: dict[str, int]) -> dict[str, float | None]:
    """CPU seconds so far: each process group, the database servers, this process, the whole machine."""
    mine = os.times()
    now = {name: x402_throughput.process_group_cpu_seconds(group) for name, group in groups.items()}
    servers = database_servers_cpu()
    postgresql = servers["PostgreSQL"] if servers and connection.vendor == "postgresql" else None
    now.update({"PostgreSQL": postgresql, "Redis": servers and servers["Redis"],
                "client (this process)": mine.user + mine.system, "machine": mcp_throughput.machine_busy_seconds(),
                "wall": time.monotonic(), "sessions": database_sessions()})
    return now


def measured(groups: dict[str, int], run) -> Series:
    before = cpu_now(groups)
    series = run()
    after = cpu_now(groups)
    series.cpu = {name: None if before[name] is None or after[name] is None else after[name] - before[name]
                  for name in before}
    return series


@dataclass
class Setup:
    port: int
    groups: dict[str, int]
    credentials: dict[str, tuple[str, str, str]]  # service id -> (action, API key secret, token)

    def run(self, label: str, service_id: str, kind: str, workers: int, count: int,
            connections: int = CONNECTIONS) -> Series:
        action, secret, token = self.credentials[service_id]
        series = Series(label, service_id, kind, workers, count, connections)
        if kind == "sync":
            function = sync_calls
        else:
            function = jobs_burst if connections > 1 else jobs_one_at_a_time
        return measured(self.groups, lambda: function(self.port, series, action, secret, token))


def counts(upstream: str) -> tuple[int, int, int]:
    """(jobs per burst with two workers, with one, one at a time) for a tool."""
    count = JOBS if upstream == "sync" else ASYNC_JOBS
    return count, count // 2, SEQUENTIAL if upstream == "sync" else SEQUENTIAL // 2


def measure(setup: Setup, start_second_worker) -> tuple[list[Series], list[Series]]:
    """(timed series, warm-ups), in the order run; a tool whose count is 0 is left out."""
    timed, warm_ups = [], []
    tools = [tool for tool in TOOLS if counts(tool[2])[0]]
    for service_id, _, _ in tools:
        warm_ups.append(setup.run("warm-up, synchronous", service_id, "sync", 0, 2 * CONNECTIONS))
        warm_ups.append(setup.run("warm-up, jobs, one worker", service_id, "jobs", 1, 2 * CONNECTIONS))
    if ONE_WORKER:
        for service_id, _, upstream in tools:
            timed.append(setup.run("jobs, one worker", service_id, "jobs", 1, counts(upstream)[1]))
    start_second_worker()
    for service_id, _, _ in tools:
        warm_ups.append(setup.run("warm-up, jobs, two workers", service_id, "jobs", WORKERS, 4 * CONNECTIONS))
    for service_id, _, upstream in tools:
        burst, _, one_by_one = counts(upstream)
        if one_by_one:
            timed.append(setup.run("jobs, one at a time", service_id, "jobs", WORKERS, one_by_one, 1))
            timed.append(setup.run("synchronous calls, one at a time (baseline)", service_id, "sync", 0,
                                   one_by_one, 1))
        timed.append(setup.run("jobs, two workers", service_id, "jobs", WORKERS, burst))
        timed.append(setup.run("synchronous calls (baseline)", service_id, "sync", 0, burst))
    return timed, warm_ups


def records_check(every: list[Series], tokens: dict[str, str]) -> list[str]:
    """Per tool: one succeeded call record and used token call per answer; every job succeeded, once."""
    problems = []
    for service_id, token in tokens.items():
        mine = [series for series in every if series.service_id == service_id]
        answers = sum(len(series.ended) if series.kind == "jobs" else len(series.answered) for series in mine)
        service = Service.objects.get(id=service_id)
        problems += [f"{service_id}: {problem}" for problem in paid_call.records_check(service, token, answers)]
        jobs = Job.objects.filter(service=service)
        submitted = sum(len(series.sent) for series in mine)
        if jobs.count() != submitted:
            problems.append(f"{service_id}: {jobs.count()} jobs stored for {submitted} accepted")
        for job in jobs.exclude(status=Job.Status.SUCCEEDED, attempts=1)[:10]:
            problems.append(f"{service_id}: job {job.pk} {job.status} after {job.attempts} attempts, upstream "
                            f"{job.upstream_status or '-'}, lease {job.lease_expires_at}, error {job.error}")
    return problems


@contextmanager
def cache_namespace(prefix: str):
    """The run's own CACHE_KEY_PREFIX in REDIS_URL (the emulator's jobs and nonces...), deleted on exit."""
    import redis

    try:
        yield
    finally:
        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        client.close()


def main() -> None:
    """Measure and print; raise SystemExit when any answer, job or record was wrong. Cleans up after itself."""
    if not settings.REDIS_URL:
        # Without it: the file broker, which a worker polls once a second, and the file cache, which culls a
        # third of its entries at random past 300 (the emulator's async jobs among them).
        print("\nAsync jobs throughput: skipped, it needs REDIS_URL (the broker and the cache of this bench; "
              "see bench/README.md, \"Jobs\")")
        return
    started = time.monotonic()
    gunicorn = paid_call.gunicorn_start
    namespace = f"bench-jobs-{os.getpid()}"
    with paid_call.test_database("bench-jobs.sqlite3") as db_url, ExitStack() as stack:
        stack.enter_context(cache_namespace(namespace))  # left last, once every process stopped
        credentials = {}
        for service_id, action, _ in TOOLS:
            secret, token = paid_call.paid_token(Service.objects.select_related("pricing_policy").get(id=service_id))
            credentials[service_id] = (action, secret, token)
        common = {"CACHE_KEY_PREFIX": namespace, "ALIBABA_CLOUD_POLL_SECONDS": str(POLL_SECONDS),
                  "ALIBABA_CLOUD_POLL_MAX_SECONDS": str(POLL_MAX_SECONDS), "HEALTH_CHECK_INTERVAL_SECONDS": "0"}
        emulator = stack.enter_context(x402_throughput.serving(
            "emulator", gunicorn, db_url, extra_env=common,
            extra_args=("--keep-alive", "75", "--threads", str(EMULATOR_THREADS))))
        upstream = {**common, "ALIBABA_CLOUD_ENDPOINT": f"http://127.0.0.1:{emulator.port}/sandbox/aliyun/{{product}}"}
        server = stack.enter_context(x402_throughput.serving(
            "Server402", gunicorn, db_url, extra_env=upstream, extra_args=("--threads", str(CONNECTIONS))))
        workers = [stack.enter_context(celery_worker("a", server.port, db_url, upstream))]
        groups = {"web (gunicorn)": server.process_group, "emulator": emulator.process_group,
                  "Celery worker a": workers[0].process_group}

        def start_second_worker() -> None:
            workers.append(stack.enter_context(celery_worker("b", server.port, db_url, upstream)))
            groups["Celery worker b"] = workers[1].process_group

        failures, timed, warm_ups = [], [], []
        try:
            timed, warm_ups = measure(Setup(server.port, groups, credentials), start_second_worker)
        except Exception as error:  # noqa: BLE001 - reported with the logs below, then the bench fails
            failures.append(f"{error.__class__.__name__}: {error}")
        every = warm_ups + timed
        failures += [failure for series in every for failure in series.failures]
        # Checked even after a failure: a job's row says where it stopped.
        failures += records_check(every, {service_id: token for service_id, (_, _, token) in credentials.items()})
        stats = worker_stats(workers)
        stored = {job.pk: job for job in Job.objects.all()}
        logs = [(emulator.name, emulator.log_path), (server.name, server.log_path),
                *((f"Celery worker {worker.name}", worker.log_path) for worker in workers)]
        log_tails = {name: path.read_text(errors="replace")[-3000:] for name, path in logs} if failures else {}
        for worker in workers:
            worker.log_path.unlink(missing_ok=True)
            worker.stats_path.unlink(missing_ok=True)
    report(timed, stats, stored, failures, log_tails, time.monotonic() - started)


# --- Reporting -------------------------------------------------------------------------------------------


def _cut(samples: list[float], percent: int) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def _ms(samples: list[float], percent: int) -> str:
    return f"{_cut(samples, percent) * 1000:.0f}" if samples else "n/a"


def _share(records: list[dict], name: str, total: float) -> str:
    """The median ms of one part of a job's time in its worker, and that part's share of all the jobs' time."""
    return f"{statistics.median(r[name] for r in records) * 1000:.1f} ({sum(r[name] for r in records) / total:.0%})"


def report(timed: list[Series], stats: dict, stored: dict, failures: list[str], log_tails: dict,
           seconds: float) -> None:
    engine = connection.vendor + (" + Redis (broker and cache)" if settings.REDIS_URL else " + file broker and cache")
    print(f"\nAsync jobs throughput ({engine}; web: gunicorn {WEB_WORKERS} workers x {CONNECTIONS} threads; "
          f"{WORKERS} Celery workers, {POOL} pool x {CONCURRENCY}; emulator: gunicorn 2 x {EMULATOR_THREADS}; "
          f"{CONNECTIONS} client connections; ALIBABA_CLOUD_POLL_SECONDS={POLL_SECONDS:g}; "
          f"{os.cpu_count()} CPUs shared by all)\n")
    baseline = {(s.service_id, s.connections): s for s in timed if s.kind == "sync"}
    two = {s.service_id: s for s in timed if s.kind == "jobs" and s.workers == WORKERS and s.connections > 1}
    print("| tool (upstream) | what | count | submitted per s | completed per s | vs synchronous calls "
          "| submit to succeeded p50 ms | p95 ms | max ms | failed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    upstream_of = {service_id: upstream for service_id, _, upstream in TOOLS}
    for series in timed:
        base = baseline.get((series.service_id, series.connections))
        ratio = (f"{series.completed_per_second / base.completed_per_second:.2f}x"
                 if base and base.completed_per_second and series.completed_per_second else "n/a")
        if series.kind == "jobs":
            latencies = [series.ended[job_id] - series.sent[job_id] for job_id in series.ended]
            submitted = f"{series.submitted_per_second:.1f}"
        else:
            latencies, submitted = series.latencies, ""
        print(f"| {series.service_id} ({upstream_of[series.service_id]}) | {series.label} | {series.count} "
              f"| {submitted} | {series.completed_per_second:.1f} | {ratio} | {_ms(latencies, 50)} "
              f"| {_ms(latencies, 95)} | {max(latencies) * 1000 if latencies else float('nan'):.0f} "
              f"| {series.failure_count} |")
    for series in timed:
        if series.kind == "jobs" and series.workers == 1 and two.get(series.service_id):
            other = two[series.service_id]
            if series.completed_per_second:
                scaling = other.completed_per_second / series.completed_per_second
                print(f"\n{series.service_id}: two workers complete {other.completed_per_second:.1f} jobs per s, "
                      f"one {series.completed_per_second:.1f}: {scaling:.2f}x.", end="")
    print("\n\nsubmit to succeeded: a job from its POST to the read that saw it succeed (reads 20 ms apart at "
          "most while nothing ends); a synchronous call from its POST to its answer.")

    print("\nIn the workers, per job (from the workers' timers and the jobs' rows): median ms, and each part's "
          "share of all the jobs' task time\n")
    print("| tool | what | queued (created to task start) p50 | p95 | task p50 | task p95 | upstream requests "
          "| requests per job | sleeps between polls | SQL statements | statements per job | the rest (Python) "
          "| task CPU (its thread) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for series in timed:
        mine = [stats[job_id] for job_id in series.sent if job_id in stats]
        if series.kind != "jobs" or not mine:
            continue
        queued = [record["start"] - stored[record["job"]].created_at.timestamp() for record in mine
                  if record["job"] in stored]
        walls = [record["wall"] for record in mine]
        total = sum(walls)
        rest = [r["wall"] - r["upstream"] - r["sleeps"] - r["sql"] for r in mine]
        print(f"| {series.service_id} | {series.label} | {_ms(queued, 50)} | {_ms(queued, 95)} "
              f"| {statistics.median(walls) * 1000:.1f} | {_cut(walls, 95) * 1000:.1f} "
              f"| {_share(mine, 'upstream', total)} | {statistics.mean(r['upstream_requests'] for r in mine):.1f} "
              f"| {_share(mine, 'sleeps', total)} | {_share(mine, 'sql', total)} "
              f"| {statistics.mean(r['statements'] for r in mine):.1f} "
              f"| {statistics.median(rest) * 1000:.1f} ({sum(rest) / total:.0%}) | {_share(mine, 'cpu', total)} |")

    print("\nThe workers' SQL statements, by kind: per job, and mean ms per job\n")
    shown = [series for series in timed if series.kind == "jobs" and series.workers == WORKERS]
    print(f"| tool | statement | per job | {' | '.join(f'{series.label} ms' for series in shown[:2])} |")
    print(f"|---|---|---:|{'---:|' * len(shown[:2])}")
    for service_id in dict.fromkeys(series.service_id for series in shown):
        mine = [series for series in shown if series.service_id == service_id]
        records = [[stats[job_id] for job_id in series.sent if job_id in stats] for series in mine]
        if not all(records):
            continue
        shapes = sorted({shape for record in records[-1] for shape in record["by_statement"]},
                        key=lambda shape: -sum(r["by_statement"].get(shape, [0, 0])[0] for r in records[-1]))
        for shape in shapes:
            count = statistics.mean(r["by_statement"].get(shape, [0, 0])[1] for r in records[-1])
            times = [f"{statistics.mean(r['by_statement'].get(shape, [0, 0])[0] for r in rs) * 1000:.2f}"
                     for rs in records]
            print(f"| {service_id} | {shape} | {count:.1f} | {' | '.join(times)} |")

    names = [name for name in ("web (gunicorn)", "Celery worker a", "Celery worker b", "emulator",
                               "PostgreSQL", "Redis", "client (this process)")
             if any(series.cpu.get(name) is not None for series in timed)]
    print("\nCPU ms per completed job (per call for the synchronous ones), by process (PostgreSQL: all its "
          "databases); other: the rest of the machine's busy time; busy: the CPUs' busy share while it ran; "
          "connections: PostgreSQL connections opened to the test database, per job\n")
    print(f"| tool | what | {' | '.join(names)} | all of these | other | busy | connections |")
    print(f"|---|---|{'---:|' * (len(names) + 4)}")
    for series in timed:
        done = len(series.ended) if series.kind == "jobs" else len(series.answered)
        if not done:
            continue
        cells = [f"{series.cpu[name] / done * 1000:.1f}" if series.cpu.get(name) is not None else "" for name in names]
        ours = sum(series.cpu[name] for name in names if series.cpu.get(name) is not None)
        machine = series.cpu.get("machine")
        other = f"{max(0.0, machine - ours) / done * 1000:.1f}" if machine is not None else "n/a"
        busy = f"{machine / (series.cpu['wall'] * os.cpu_count()):.0%}" if machine is not None else "n/a"
        sessions = series.cpu.get("sessions")
        opened = f"{sessions / done:.2f}" if sessions is not None else "n/a"
        print(f"| {series.service_id} | {series.label} | {' | '.join(cells)} | {ours / done * 1000:.1f} | {other} "
              f"| {busy} | {opened} |")
    reads = sum(series.reads for series in timed)
    jobs = sum(len(series.ended) for series in timed if series.kind == "jobs")
    print(f"\nStatus reads: {reads} GET /api/jobs?ids= for {jobs} jobs. Failed: "
          f"{sum(series.failure_count for series in timed)}; this section took {seconds:.0f} s (test database, "
          "two gunicorns, the workers and warm-ups included)")
    x402_throughput.fail_on(failures, log_tails, bench="jobs bench")


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_FLAG]:
        worker_main(sys.argv[2:])
    else:
        standalone.run(main, _own_var_dir)

"""Paid call overhead: `POST /api/tools/<id>` through Server402 over the same upstream call made directly.

Part of `make bench` (bench/run.py calls main()); see bench/README.md, "Paid call overhead".

The app runs under gunicorn, as the Procfile serves it, on a free loopback port
and on a throwaway test database this module creates and drops. Its sandbox
emulator of Alibaba Cloud's gateway answers both series:

- baseline: a signed DetectCelebrity straight to the emulator, through the same
  `aliyun_client.call` the app uses (one pooled, keep-alive httpx client);
- subject: `POST /api/tools/celebrity-recognition` with an API key and a paid
  token, through one keep-alive httpx client: the app resolves the service,
  checks the key and the input, reserves a call of the token, writes the call's
  record, makes that same signed call to the emulator over loopback, closes the
  record and answers.

Both are warmed up, then interleaved (subject, baseline, subject, ...) for
BENCH_CALLS rounds (default 300), one at a time: latency, not throughput.
Every answer is checked while timing, and the database must then hold one
succeeded call record and one used token call per subject answer; any failure
fails the bench.

BENCH_PROFILE=1 also profiles BENCH_PROFILE_CALLS (default 200) subject calls
in-process (Django's test client; the upstream is still the gunicorn emulator)
with pyinstrument if it can be imported, else cProfile. Neither is a
dependency: `pip install --target /tmp/pyinst pyinstrument` and
`PYTHONPATH=/tmp/pyinst` is enough.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/paid_call.py`.
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from catalog import aliyun_client  # noqa: E402
from catalog.models import Service  # noqa: E402
from catalog.services import REFERENCE_CATALOG, catalog_import  # noqa: E402
from payments import credentials  # noqa: E402
from payments import services as payment_services  # noqa: E402
from payments.models import Payment, ToolCall  # noqa: E402

SERVICE_ID = "celebrity-recognition"
ACTION = "DetectCelebrity"
IMAGE_URL = "https://example.com/bench/celebrity.jpg"
CALLS = int(os.environ.get("BENCH_CALLS", "300"))
WARM_UP = 30
WORKERS, THREADS = 2, 4
START_TIMEOUT_SECONDS = 30


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return cuts[49], cuts[94]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL naming the test database this process just created, for gunicorn."""
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{settings_dict['NAME']}"))


@contextmanager
def test_database(sqlite_file: str):
    """A fresh test database holding the reference catalog, dropped on exit; yields its DATABASE_URL.

    On SQLite a file under SERVER402_VAR_DIR, not the in-memory default:
    gunicorn's workers must open the same database.
    """
    settings_dict = connection.settings_dict
    old_test_name = settings_dict["TEST"].get("NAME")
    if connection.vendor == "sqlite":
        settings_dict["TEST"]["NAME"] = str(Path(settings.VAR_DIR) / sqlite_file)
    # create_test_db() returns the test database's name; destroy_test_db() restores the one given.
    old_name = settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        catalog_import(paths=[REFERENCE_CATALOG])
        yield database_url(connection.settings_dict)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        settings_dict["TEST"]["NAME"] = old_test_name


def server_env(port: int, db_url: str, extra_env: dict | None = None) -> dict:
    """The environment Server402 is served with here: sandbox, the given database, its default upstream
    endpoint being its own emulator. `extra_env` lets the x402 throughput bench point other servers at one
    shared emulator."""
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": db_url, "SERVER402_ENV_FILE": "",
           "SERVER402_VAR_DIR": str(settings.VAR_DIR), "SECRET_KEY": settings.SECRET_KEY,
           "SERVER402_MODE": "sandbox", "SANDBOX_LATENCY_MS": "0", "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           # Every load comes from 127.0.0.1: the per-address limit on unpaid calls would measure itself.
           "ANONYMOUS_RATE_LIMIT_PER_MINUTE": "0"}
    env.pop("ALIBABA_CLOUD_ENDPOINT", None)
    env.update(extra_env or {})
    return env


def server_start(command: list[str], env: dict, log_path: Path, *, cwd: Path = ROOT) -> subprocess.Popen:
    """A server in a session of its own (so server_stop can end all its processes), logging to log_path;
    `cwd` is the checkout it serves (the load bench may compare another one)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def gunicorn_start(port: int, db_url: str, log_path: Path, *, app: str = "server402.wsgi",
                   extra_env: dict | None = None, extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """The app as the Procfile serves it (or another WSGI `app`, with the same settings)."""
    command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
               "--workers", str(WORKERS), "--threads", str(THREADS), "--graceful-timeout", "5",
               # Not the per-user default socket path, which a `make run` on this machine may be using.
               "--no-control-socket", *extra_args]
    return server_start(command, server_env(port, db_url, extra_env), log_path)


def server_wait(process: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            # Any answer will do (the emulator refuses an unsigned request with a 400, other apps say 404).
            httpx.get(f"http://127.0.0.1:{port}/sandbox/aliyun/facebody/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer within {START_TIMEOUT_SECONDS} s:\n{log_path.read_text()[-3000:]}")


def server_stop(process: subprocess.Popen) -> None:
    """Stop the master (gunicorn's or uvicorn's; it stops its workers); kill the session it leads if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def paid_token(service: Service) -> tuple[str, str]:
    """(API key secret, payment token) good for a million calls of `service`."""
    created = payment_services.api_key_create(label="bench", balance_cents=0)
    payment = payment_services.payment_create(service=service, client=created.api_key)
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.PAID, method=Payment.Method.BALANCE,
                                                 max_calls=10**6, paid_at=timezone.now())
    return created.secret, credentials.payment_token(payment.id)


class Series:
    def __init__(self, name: str):
        self.name, self.samples, self.failures = name, [], []

    def timed(self, function, *, record: bool) -> None:
        start = time.perf_counter()
        try:
            problem = function()
        except Exception as error:  # noqa: BLE001 - every failure is counted and shown
            problem = f"{error.__class__.__name__}: {error}"
        elapsed_ms = (time.perf_counter() - start) * 1000
        if problem:
            self.failures.append(problem)
        elif record:
            self.samples.append(elapsed_ms)


def measure(port: int, service: Service, secret: str, token: str) -> tuple[Series, Series]:
    method = service.upstream_method or "POST"
    arguments = {"ImageURL": IMAGE_URL}
    # Placed as the pipeline places them (DetectCelebrity: ImageURL in the form body).
    query, form = aliyun_client.request_parameters(method, service.upstream_parameters or {}, arguments)

    def baseline_call() -> str | None:
        answer = aliyun_client.call(product=service.upstream_product, version=service.upstream_version,
                                    action=service.upstream_action, method=method, query=query, form=form)
        if not answer.request_id:
            return f"no RequestId: {answer.body}"
        if answer.attempts != 1:
            return f"needed {answer.attempts} attempts"
        return None

    url = f"http://127.0.0.1:{port}/api/tools/{SERVICE_ID}"
    headers = {"X-Payment-Token": token, "Authorization": f"Bearer {secret}"}
    subject, baseline = Series("subject"), Series("baseline")
    with httpx.Client(timeout=30) as client:
        def subject_call() -> str | None:
            response = client.post(url, json=arguments, headers=headers)
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {' '.join(response.text.split())[:300]}"
            action = response.json().get("data", {}).get("Action")
            return None if action == ACTION else f"data.Action is {action!r}"

        for round_ in range(WARM_UP + CALLS):
            subject.timed(subject_call, record=round_ >= WARM_UP)
            baseline.timed(baseline_call, record=round_ >= WARM_UP)
    return subject, baseline


def records_check(service: Service, token: str, subject_calls: int) -> list[str]:
    """What the database says the subject did: one succeeded record and one used call per answer."""
    problems = []
    calls = ToolCall.objects.filter(service=service)
    succeeded = calls.filter(outcome=ToolCall.Outcome.SUCCEEDED).count()
    if calls.count() != subject_calls or succeeded != subject_calls:
        problems.append(f"{calls.count()} call records, {succeeded} succeeded, for {subject_calls} answers")
    used = Payment.objects.get(pk=credentials.payment_token_id(token)).used_calls
    if used != subject_calls:
        problems.append(f"the token has {used} used calls for {subject_calls} answers")
    return problems


def profile(secret: str, token: str) -> None:
    """Where a subject call's time goes, in-process; the upstream is still the gunicorn emulator.

    First the pipeline's steps timed one by one (wrapped here, not changed) and
    the SQL queries of one call, then a pyinstrument profile (cProfile without it).
    """
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from payments import pipeline

    calls = int(os.environ.get("BENCH_PROFILE_CALLS", "200"))
    client = Client()
    headers = {"X-Payment-Token": token, "Authorization": f"Bearer {secret}"}

    def one() -> None:
        response = client.post(f"/api/tools/{SERVICE_ID}", {"ImageURL": IMAGE_URL},
                               content_type="application/json", headers=headers)
        assert response.status_code == 200, response.content

    def run() -> None:
        for _ in range(calls):
            one()

    run()  # warm up
    steps = {name: [] for name in ("_resolve", "_authorize", "_validate", "_pay", "_run")}
    steps["aliyun_client.call_service"] = []
    originals = {name: getattr(pipeline, name) for name in steps if name.startswith("_")}
    original_call_service = aliyun_client.call_service

    def timing(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                steps[name].append((time.perf_counter() - start) * 1000)
        return wrapper

    totals = []
    try:
        for name, function in originals.items():
            setattr(pipeline, name, timing(name, function))
        aliyun_client.call_service = timing("aliyun_client.call_service", original_call_service)
        for _ in range(calls):
            start = time.perf_counter()
            one()
            totals.append((time.perf_counter() - start) * 1000)
    finally:
        for name, function in originals.items():
            setattr(pipeline, name, function)
        aliyun_client.call_service = original_call_service
    with CaptureQueriesContext(connection) as queries:
        one()
    print(f"\nIn-process subject call ({calls} calls, Django test client, no profiler): median ms per step\n")
    print("| step | p50 ms |\n|---|---:|")
    print(f"| whole request (Django, DRF, pipeline) | {statistics.median(totals):.2f} |")
    for name, samples in steps.items():
        print(f"| {name} | {statistics.median(samples):.2f} |")
    print(f"\nSQL statements in one call: {len(queries)}")
    for query in queries:
        print(f"  {query['sql'][:160]}")

    try:
        from pyinstrument import Profiler
    except ImportError:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run)
        print(f"\ncProfile of {calls} in-process subject calls (cumulative):\n")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        return
    profiler = Profiler()
    profiler.start()
    run()
    profiler.stop()
    print(f"\npyinstrument profile of {calls} in-process subject calls:\n")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    """Measure and print; raise SystemExit when any answer was wrong. Cleans up after itself."""
    started = time.monotonic()
    port = free_port()
    log_path = Path(settings.VAR_DIR) / "bench-gunicorn.log"
    with test_database("bench-paid-call.sqlite3") as db_url:
        process = None
        try:
            service = Service.objects.select_related("pricing_policy").get(id=SERVICE_ID)
            secret, token = paid_token(service)
            process = gunicorn_start(port, db_url, log_path)
            server_wait(process, port, log_path)
            with override_settings(ALIBABA_CLOUD_ENDPOINT=f"http://127.0.0.1:{port}/sandbox/aliyun/{{product}}"):
                subject, baseline = measure(port, service, secret, token)
                failures = [f"subject: {f}" for f in subject.failures] + [f"baseline: {f}" for f in baseline.failures]
                if not failures:
                    failures = records_check(service, token, len(subject.samples) + WARM_UP)
                if os.environ.get("BENCH_PROFILE") and not failures:
                    profile(secret, token)
            log_tail = log_path.read_text()[-4000:] if failures else ""
        finally:
            if process is not None:
                server_stop(process)
            log_path.unlink(missing_ok=True)
    report(subject, baseline, failures, log_tail, time.monotonic() - started)


def report(subject: Series, baseline: Series, failures: list[str], log_tail: str, seconds: float) -> None:
    engine = connection.vendor + (" + Redis cache" if settings.REDIS_URL else "")
    total = 2 * (WARM_UP + CALLS)
    print(f"\nPaid call overhead ({engine}; gunicorn {WORKERS} workers x {THREADS} threads; "
          f"{CALLS} interleaved rounds after {WARM_UP} warm-up; one sequential client)\n")
    if subject.samples and baseline.samples:
        s50, s95 = percentiles(subject.samples)
        b50, b95 = percentiles(baseline.samples)
        print("| what | p50 ms | p95 ms | p50 vs baseline | p95 vs baseline |")
        print("|---|---:|---:|---:|---:|")
        print(f"| POST /api/tools/{SERVICE_ID} (key + paid token) | {s50:.2f} | {s95:.2f} "
              f"| {s50 / b50:.2f}x | {s95 / b95:.2f}x |")
        print(f"| baseline: signed {ACTION} straight to the emulator | {b50:.2f} | {b95:.2f} | 1.00x | 1.00x |")
        print(f"| overhead (subject - baseline) | {s50 - b50:.2f} | {s95 - b95:.2f} | | |")
    print(f"\nfailures: {len(failures)} of {total} calls; this section took {seconds:.0f} s "
          "(test database, catalog, gunicorn start and stop included)")
    if failures:
        for failure in failures[:10]:
            print(f"  {failure}")
        print(f"\ngunicorn's log ends with:\n{log_tail}")
        raise SystemExit(f"paid call bench: {len(failures)} failed calls or records (must be 0)")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

"""x402 throughput: 402 challenges and verified-and-settled paid calls per second, Server402 against the
x402 SDK's own example servers (Flask and FastAPI, bench/x402_reference_servers.py) doing the same job.

Part of `make bench` (bench/run.py calls main()); see bench/README.md, "x402 throughput".

Four servers, each its own processes, with paid_call.py's sizing (2 workers;
4 threads each under gunicorn):

- the sandbox emulator of Alibaba Cloud (Server402's app under gunicorn, used
  for nothing else): the upstream of the three others, so none of them pays
  for another's upstream;
- Server402 under gunicorn, sandbox mode, on a test database of its own;
- the SDK's Flask example under gunicorn, same settings;
- the SDK's FastAPI example under uvicorn (uvloop, httptools, no access log).

The three sell the same route for the same payment, verify and settle through
the SDK's facilitator on the same offline sandbox chain, and make the same
upstream call. For each: unpaid POSTs to the tool for BENCH_X402_SECONDS
(default 1) per round, counting 402 challenges; then BENCH_X402_CALLS (default
60) paid POSTs per round, each with its own authorization signed beforehand by
the official x402 client (signing is the payer's cost, not the server's),
counting 200s whose PAYMENT-RESPONSE says settled. Always 8 keep-alive
connections; BENCH_X402_ROUNDS rounds (default 6), the servers taking turns in
an order reversed every round (ABC CBA ...), so drift on the machine falls on
all of them alike.

Every answer is checked; afterwards Server402's database must hold one settled
authorization and one succeeded call record per paid answer. Any failure fails
the bench.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/x402_throughput.py`.
"""

import base64
import json
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from eth_account import Account  # noqa: E402
from x402 import x402ClientSync  # noqa: E402
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header  # noqa: E402
from x402.mechanisms.evm.exact import ExactEvmClientScheme  # noqa: E402

import http_load  # noqa: E402  (bench/, beside this file)
import paid_call  # noqa: E402
from catalog.models import Service  # noqa: E402
from payments import challenge  # noqa: E402
from payments.models import ToolCall, X402Authorization  # noqa: E402

SERVICE_ID, ACTION = paid_call.SERVICE_ID, paid_call.ACTION
PATH = f"/api/tools/{SERVICE_ID}"
BODY = json.dumps({"ImageURL": paid_call.IMAGE_URL}).encode()
UNPAID = http_load.Request("POST", PATH, BODY, {"Content-Type": "application/json"})
CONNECTIONS = paid_call.WORKERS * paid_call.THREADS
ROUNDS = int(os.environ.get("BENCH_X402_ROUNDS", "6"))
CHALLENGE_SECONDS = float(os.environ.get("BENCH_X402_SECONDS", "1"))
PAID_CALLS = int(os.environ.get("BENCH_X402_CALLS", "60"))
WARM_UP_SECONDS = 1.0
WARM_UP_CALLS = 2 * CONNECTIONS
SERVER402 = "Server402"
FLASK = "SDK Flask (gunicorn)"
FASTAPI = "SDK FastAPI (uvicorn)"
REFERENCES = (FLASK, FASTAPI)
REFERENCE_APPS = "bench.x402_reference_servers"


@dataclass(frozen=True)
class Served:
    name: str
    port: int
    log_path: Path
    process_group: int  # the master's and its workers' (each server runs in a session of its own)


def process_group_cpu_seconds(group: int) -> float | None:
    """User and system CPU time of a process group so far: its live processes and the children they reaped
    (a gunicorn worker restarted after max_requests moves its time to the master); None without /proc."""
    ticks = 0
    try:
        stats = [path for path in Path("/proc").iterdir() if path.name.isdigit()]
    except OSError:
        return None
    for path in stats:
        try:
            # The fields after the command name, which may itself hold spaces or parentheses.
            fields = (path / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[2]) == group:
            ticks += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def uvicorn_start(port: int, db_url: str, log_path: Path, *, app: str, extra_env: dict):
    """An ASGI app factory in the SDK example's server, at its fastest settings, as many workers as gunicorn."""
    command = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(paid_call.WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    return paid_call.server_start(command, paid_call.server_env(port, db_url, extra_env), log_path)


@contextmanager
def serving(name: str, start, db_url: str, **options):
    """A server started by `start` (paid_call.gunicorn_start or uvicorn_start), answering; always stopped."""
    port = paid_call.free_port()
    log_path = Path(settings.VAR_DIR) / f"bench-x402-{port}.log"
    process = start(port, db_url, log_path, **options)
    try:
        paid_call.server_wait(process, port, log_path)
        yield Served(name, port, log_path, process.pid)
    finally:
        paid_call.server_stop(process)
        log_path.unlink(missing_ok=True)


@contextmanager
def reference_route(service: Service):
    """The SDK servers' route, written from the catalog: what Server402 asks for, they ask for too."""
    (offered,) = challenge.x402_requirements(service)
    resource = challenge.tool_resource(service)
    route = {
        "path": PATH,
        "requirements": offered.model_dump(mode="json", by_alias=True, exclude_none=True),
        "description": resource.description,
        "service_name": resource.service_name,
        "tags": resource.tags,
        "extensions": challenge.bazaar_extension(service),
        "upstream": {"upstream_product": service.upstream_product, "upstream_version": service.upstream_version,
                     "upstream_action": service.upstream_action, "upstream_method": service.upstream_method,
                     "upstream_parameters": service.upstream_parameters},
    }
    path = Path(settings.VAR_DIR) / "bench-x402-reference-route.json"
    path.write_text(json.dumps(route))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _text(body: bytes) -> str:
    return " ".join(body.decode(errors="replace").split())[:300]


def challenge_check(status: int, headers, body: bytes) -> str | None:
    if status != 402:
        return f"HTTP {status} instead of 402: {_text(body)}"
    return None if headers.get("PAYMENT-REQUIRED") else "402 without PAYMENT-REQUIRED"


def paid_check(status: int, headers, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {_text(body)}"
    receipt = headers.get("PAYMENT-RESPONSE")
    if not receipt:
        return "200 without PAYMENT-RESPONSE"
    settlement = json.loads(base64.b64decode(receipt))
    if not settlement.get("success") or not settlement.get("transaction"):
        return f"PAYMENT-RESPONSE does not say settled: {settlement}"
    action = json.loads(body).get("data", {}).get("Action")
    return None if action == ACTION else f"data.Action is {action!r}"


def payment_required(server: Served) -> str:
    """The PAYMENT-REQUIRED header of one unpaid call, as an agent first meets it."""
    response = httpx.post(f"http://127.0.0.1:{server.port}{PATH}", content=BODY,
                          headers={"Content-Type": "application/json"}, timeout=30)
    problem = challenge_check(response.status_code, response.headers, response.content)
    if problem:
        raise RuntimeError(f"{server.name}: {problem}")
    return response.headers["PAYMENT-REQUIRED"]


def same_payment_asked(required: dict[str, str]) -> list[str]:
    """Every server must ask for the same payment (scheme, network, asset, amount, payee, timeout, domain)."""
    accepts = {name: [a.model_dump() for a in decode_payment_required_header(header).accepts]
               for name, header in required.items()}
    return [f"{name} asks for {asked}, {SERVER402} for {accepts[SERVER402]}"
            for name, asked in accepts.items() if asked != accepts[SERVER402]]


def paid_requests(required_header: str, count: int) -> list[http_load.Request]:
    """`count` retries of the tool call, each paying with its own authorization, signed as agents sign them."""
    payer = x402ClientSync().register("eip155:*", ExactEvmClientScheme(signer=Account.create()))
    required = decode_payment_required_header(required_header)
    requests = []
    for _ in range(count):
        payload = payer.create_payment_payload(required, resource=required.resource)
        requests.append(http_load.Request("POST", PATH, BODY, {
            "Content-Type": "application/json", "PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}))
    return requests


@dataclass
class Series:
    """One server's runs of one kind of request: a warm-up (checked, not timed), then the timed rounds,
    and the CPU time the server's own processes spent in those rounds (None when it cannot be read)."""

    warm_up: http_load.Run | None = None
    rounds: list = field(default_factory=list)
    cpu_seconds: float | None = 0.0

    def timed_round(self, server: Served, load, *arguments) -> None:
        """One round of `load(server, *arguments)`, its answers and the server's CPU time counted."""
        before = process_group_cpu_seconds(server.process_group)
        self.rounds.append(load(server, *arguments))
        after = process_group_cpu_seconds(server.process_group)
        if None in (before, after, self.cpu_seconds):
            self.cpu_seconds = None
        else:
            self.cpu_seconds += after - before

    @property
    def cpu_ms_per_answer(self) -> float | None:
        answers = sum(run.answers for run in self.rounds)
        return self.cpu_seconds * 1000 / answers if self.cpu_seconds is not None and answers else None

    @property
    def per_second(self) -> float:
        seconds = sum(run.seconds for run in self.rounds)
        return sum(run.answers for run in self.rounds) / seconds if seconds else 0.0

    @property
    def answers_with_warm_up(self) -> int:
        return sum(run.answers for run in [self.warm_up, *self.rounds] if run)

    @property
    def requests(self) -> int:
        return sum(run.answers + run.failure_count for run in self.rounds)

    @property
    def failure_count(self) -> int:
        return sum(run.failure_count for run in [self.warm_up, *self.rounds] if run)

    def failures(self, label: str) -> list[str]:
        return [f"{label}: {failure}" for run in [self.warm_up, *self.rounds] if run for failure in run.failures]


def turns(servers: list[Served], rounds: int):
    """(round, server), the order reversed every round (A B C, C B A, ...): drift on the machine falls on all."""
    for round_ in range(rounds):
        for server in (servers if round_ % 2 == 0 else servers[::-1]):
            yield round_, server


def measure_challenges(servers: list[Served]) -> dict[str, Series]:
    def run(server: Served, seconds: float) -> http_load.Run:
        return http_load.for_duration(server.port, UNPAID, challenge_check, connections=CONNECTIONS,
                                      seconds=seconds)

    series = {server.name: Series(warm_up=run(server, WARM_UP_SECONDS)) for server in servers}
    for _, server in turns(servers, ROUNDS):
        series[server.name].timed_round(server, run, CHALLENGE_SECONDS)
    return series


def measure_paid_calls(servers: list[Served], required: dict[str, str]) -> dict[str, Series]:
    def run(server: Served, requests: list) -> http_load.Run:
        return http_load.for_each(server.port, requests, paid_check, connections=CONNECTIONS)

    # Signed just before they are spent: an authorization is valid for maxTimeoutSeconds (300 s).
    signed = {server.name: paid_requests(required[server.name], WARM_UP_CALLS + ROUNDS * PAID_CALLS)
              for server in servers}
    series = {server.name: Series(warm_up=run(server, signed[server.name][:WARM_UP_CALLS])) for server in servers}
    for round_, server in turns(servers, ROUNDS):
        start = WARM_UP_CALLS + round_ * PAID_CALLS
        series[server.name].timed_round(server, run, signed[server.name][start:start + PAID_CALLS])
    return series


def records_check(paid_answers: int) -> list[str]:
    """Server402's own account of the paid calls: one settled authorization and one succeeded record each."""
    settled = X402Authorization.objects.filter(status=X402Authorization.Status.SETTLED).count()
    succeeded = ToolCall.objects.filter(outcome=ToolCall.Outcome.SUCCEEDED,
                                        payment_method=ToolCall.PaymentMethod.X402).count()
    if settled == succeeded == paid_answers:
        return []
    problem = (f"Server402's database holds {settled} settled authorizations and {succeeded} succeeded x402 "
               f"call records for {paid_answers} paid answers")
    return [problem]


def measure(servers: list[Served]) -> tuple[dict, dict, list[str]]:
    """(402 challenges, paid calls, failures), the first two a Series per server name."""
    required = {server.name: payment_required(server) for server in servers}
    failures = same_payment_asked(required)
    challenges = measure_challenges(servers)
    paid = measure_paid_calls(servers, required)
    for name in required:
        failures += challenges[name].failures(f"{name} 402") + paid[name].failures(f"{name} paid")
    if not failures:
        failures = records_check(paid[SERVER402].answers_with_warm_up)
    return challenges, paid, failures


def main() -> None:
    """Measure and print; raise SystemExit when any answer or record was wrong. Cleans up after itself."""
    started = time.monotonic()
    gunicorn = paid_call.gunicorn_start
    with paid_call.test_database("bench-x402.sqlite3") as db_url, ExitStack() as stack:
        service = Service.objects.select_related("pricing_policy").get(id=SERVICE_ID)
        # aliyun_client pools connections for 30 s and gunicorn closes idle ones after 2 s: between rounds a
        # server's pooled connection can be closed just as it sends on it, and a POST that fails so is not
        # retried (a 502). The emulator stands in for Alibaba Cloud's gateway here, so it keeps them longer.
        emulator = stack.enter_context(serving("emulator", gunicorn, db_url, extra_args=("--keep-alive", "60")))
        upstream = {"ALIBABA_CLOUD_ENDPOINT": f"http://127.0.0.1:{emulator.port}/sandbox/aliyun/{{product}}"}
        route = stack.enter_context(reference_route(service))
        reference_env = {**upstream, "BENCH_X402_REFERENCE_ROUTE": str(route)}
        servers = [
            stack.enter_context(serving(SERVER402, gunicorn, db_url, extra_env=upstream)),
            stack.enter_context(serving(FLASK, gunicorn, db_url, app=f"{REFERENCE_APPS}:flask_app()",
                                        extra_env=reference_env)),
            stack.enter_context(serving(FASTAPI, uvicorn_start, db_url, app=f"{REFERENCE_APPS}:fastapi_app",
                                        extra_env=reference_env)),
        ]
        challenges, paid, failures = measure(servers)
        log_tails = {s.name: s.log_path.read_text()[-3000:] for s in [emulator, *servers]} if failures else {}
    report(challenges, paid, failures, log_tails, time.monotonic() - started)


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.1f}"


def _ratio(ours: Series, theirs: Series) -> str:
    """The ratio of the totals, and the range of the per-round ratios (the noise of this machine)."""
    rounds = sorted(a.per_second / b.per_second for a, b in zip(ours.rounds, theirs.rounds, strict=True))
    return f"{ours.per_second / theirs.per_second:.2f}x ({rounds[0]:.2f}-{rounds[-1]:.2f})"


def _cpu(series: Series) -> str:
    return "n/a" if series.cpu_ms_per_answer is None else f"{series.cpu_ms_per_answer:.2f}"


KINDS = [("402 challenges (unpaid POST)", "402 challenge"), ("paid calls, verified and settled", "paid call")]


def report_table(challenges: dict, paid: dict) -> None:
    names = [SERVER402, *REFERENCES]
    print(f"| what | {' | '.join(f'{name} per s' for name in names)} | "
          f"{' | '.join(f'{SERVER402} vs {name}' for name in REFERENCES)} |")
    print(f"|---|{'---:|' * (len(names) + len(REFERENCES))}")
    for (label, _), by_server in zip(KINDS, (challenges, paid), strict=True):
        rates = " | ".join(_rate(by_server[name].per_second) for name in names)
        ratios = " | ".join(_ratio(by_server[SERVER402], by_server[name]) for name in REFERENCES)
        print(f"| {label} | {rates} | {ratios} |")
    print("\nCPU ms per answer, the server's own processes (the emulator's and the client's not included):\n")
    print(f"| what | {' | '.join(names)} |")
    print(f"|---|{'---:|' * len(names)}")
    for (_, label), by_server in zip(KINDS, (challenges, paid), strict=True):
        print(f"| {label} | {' | '.join(_cpu(by_server[name]) for name in names)} |")


def report(challenges: dict, paid: dict, failures: list[str], log_tails: dict, seconds: float) -> None:
    engine = connection.vendor + (" + Redis cache" if settings.REDIS_URL else "")
    print(f"\nx402 throughput ({engine}; {paid_call.WORKERS} workers per server, {paid_call.THREADS} threads each "
          f"under gunicorn; {CONNECTIONS} keep-alive connections; {ROUNDS} rounds, servers taking turns; "
          f"{os.cpu_count()} CPUs shared by the servers, the emulator and the client)\n")
    every = [series for by_server in (challenges, paid) for series in by_server.values()]
    if all(series.per_second for series in every):
        report_table(challenges, paid)
    print(f"\nratio: of the totals (lowest-highest of the {ROUNDS} rounds). Failed requests: "
          f"{sum(s.failure_count for s in every)} of {sum(s.requests for s in every)} timed (warm-ups checked too); "
          f"this section took {seconds:.0f} s (test database, four servers, signing and warm-up included)")
    fail_on(failures, log_tails, bench="x402 throughput bench")


def fail_on(failures: list[str], log_tails: dict[str, str], *, bench: str) -> None:
    """Print the first failures and the servers' logs, and fail `make bench`, if anything failed."""
    if not failures:
        return
    for failure in failures[:10]:
        print(f"  {failure}")
    for name, tail in log_tails.items():
        print(f"\n{name}: its log ends with:\n{tail}")
    raise SystemExit(f"{bench}: {len(failures)} failed answers or records (must be 0)")


if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

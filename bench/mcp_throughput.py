"""MCP throughput: `/mcp` tools/list and token-paid tools/call per second, each against its HTTP twin on the
same server in the same run.

Part of `make bench` (bench/run.py calls main() as "mcp"); see bench/README.md, "MCP".

Named mcp_throughput, not mcp: bench/ is first on sys.path when a bench runs, and a bench/mcp.py would hide
the `mcp` SDK package from everything in the process.

Server402 runs as paid_call.py serves it (gunicorn, 2 workers x 4 threads, sandbox mode) on a test database
of its own, with its upstream on a second gunicorn serving only the sandbox emulator, as x402_throughput.py
does: a paid call that called back into its own gunicorn could wait for a thread that its own load holds.
Two groups of requests, all through http_load's closed loop at each of BENCH_MCP_CONNECTIONS (default
1,4,16) keep-alive connections:

- tools/list: `POST /mcp` tools/list (the whole list, one page), its twin `GET /openapi.json` and, as a
  reference, the catalog listing `GET /api/services`;
- tools/call: `POST /mcp` tools/call of celebrity_recognition with a paymentToken argument and its twin
  `POST /api/tools/celebrity-recognition` with X-Payment-Token, the same API key and the same token (a
  payment marked paid for a million calls, as paid_call.py makes it).

Each kind is warmed up once (at the highest concurrency, so both workers are), then timed for
BENCH_MCP_SECONDS (default 0.7) per round, BENCH_MCP_ROUNDS rounds (default 3) per concurrency, the kinds
taking turns in an order reversed every round (A B C, C B A), so drift on the machine falls on all.
Server402's CPU time (its process group, from /proc) is counted per answer beside the rate.

Every answer is checked while timing, and the database must then hold one succeeded call record and one
used token call per paid answer, MCP and HTTP together (paid_call.records_check). Any failure fails the bench.

BENCH_PROFILE=1 then times each kind in-process (Django's test client, BENCH_PROFILE_CALLS each, default
200, interleaved within a group), counts its SQL statements and prints a cProfile of the MCP requests.

Alone: `SECRET_KEY=bench-only-not-a-secret .venv/bin/python bench/mcp_throughput.py`.
"""

import json
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":
    import standalone  # bench/, beside this file

    _own_var_dir = standalone.django_setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

import http_load  # noqa: E402  (bench/, beside this file)
import paid_call  # noqa: E402
import x402_throughput  # noqa: E402
from catalog.models import Service  # noqa: E402

SERVICE_ID, ACTION, IMAGE_URL = paid_call.SERVICE_ID, paid_call.ACTION, paid_call.IMAGE_URL
TOOL_NAME = SERVICE_ID.replace("-", "_")
SEARCH_TOOL = "search_services"
JOB_TOOL = "get_job_result"
MCP_VERSION = "2025-11-25"
CONNECTIONS = tuple(int(n) for n in os.environ.get("BENCH_MCP_CONNECTIONS", "1,4,16").split(","))
ROUNDS = int(os.environ.get("BENCH_MCP_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_MCP_SECONDS", "0.7"))
WARM_UP_SECONDS = 0.5
# A request whose answer differs from every one already checked is checked in full (see Known).
KNOWN_ANSWERS_KEPT = 8


@dataclass(frozen=True)
class Kind:
    """One kind of request and the check every answer to it must pass."""

    label: str
    request: http_load.Request
    check: http_load.Check


class Known:
    """A check that validates an answer in full once and then accepts byte-identical answers at once.

    A listing is the same 200-850 KB every time; parsing each copy would put the client's JSON parsing (on
    the same two CPUs) into the server's figure. An answer equal byte for byte to one that passed is the
    same answer, so every answer is still checked. Thread-safe enough: the list only grows, under the GIL.
    """

    def __init__(self, validate):
        self.validate, self.good = validate, []

    def __call__(self, status: int, headers, body: bytes) -> str | None:
        if status == 200 and any(body == good for good in self.good):
            return None
        if status != 200:
            return f"HTTP {status}: {x402_throughput._text(body)}"
        problem = self.validate(json.loads(body))
        if problem is None and len(self.good) < KNOWN_ANSWERS_KEPT:
            self.good.append(body)
        return problem


def _rpc_result(answer: dict) -> tuple[dict | None, str | None]:
    """(result, None) when `answer` is the JSON-RPC result of request id 1, else (None, what is wrong)."""
    if answer.get("jsonrpc") != "2.0" or answer.get("id") != 1:
        return None, f"not a JSON-RPC answer to id 1: {str(answer)[:300]}"
    if "error" in answer or not isinstance(answer.get("result"), dict):
        return None, f"no result: {str(answer)[:300]}"
    return answer["result"], None


def kinds(secret: str, token: str) -> dict[str, list[Kind]]:
    """The two groups, MCP first, then its HTTP twin, then references; what they must answer read from the DB."""
    published = list(Service.objects.filter(state=Service.State.PUBLISHED).order_by("id"))
    tool_names = sorted([SEARCH_TOOL, JOB_TOOL, *(service.tool_name for service in published)])
    tool_paths = {f"/api/tools/{service.id}" for service in published}
    service_ids = [service.id for service in published]
    bearer = {"Authorization": f"Bearer {secret}"}
    json_type = {"Content-Type": "application/json"}
    # As MCP clients on Streamable HTTP send them; the answer is plain JSON either way.
    mcp_headers = {**json_type, "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MCP_VERSION}

    def mcp(method: str, params: dict | None = None, headers: dict | None = None) -> http_load.Request:
        message = {"jsonrpc": "2.0", "id": 1, "method": method, **({"params": params} if params else {})}
        return http_load.Request("POST", "/mcp", json.dumps(message).encode(), {**mcp_headers, **(headers or {})})

    def tools_listed(answer: dict) -> str | None:
        result, problem = _rpc_result(answer)
        if problem:
            return problem
        names = [tool.get("name") for tool in result.get("tools", [])]
        if names != tool_names:
            return f"tools/list names {len(names)} tools, not the {len(tool_names)} expected: {names[:5]}..."
        return "a nextCursor: the list does not fit one page" if "nextCursor" in result else None

    def openapi_listed(document: dict) -> str | None:
        paths = {path for path in document.get("paths", {}) if path.startswith("/api/tools/")}
        return None if paths == tool_paths else f"{len(paths)} tool paths, not the {len(tool_paths)} expected"

    def services_listed(answer: dict) -> str | None:
        ids = [service.get("id") for service in answer.get("services", [])]
        return None if answer.get("total") == len(ids) and sorted(ids) == service_ids else (
            f"total {answer.get('total')}, {len(ids)} services, not the {len(service_ids)} published")

    def mcp_called(status: int, headers, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {x402_throughput._text(body)}"
        result, problem = _rpc_result(json.loads(body))
        if problem:
            return problem
        if result.get("isError") is not False:
            return f"isError is {result.get('isError')!r}: {str(result.get('structuredContent'))[:300]}"
        action = (result.get("structuredContent") or {}).get("data", {}).get("Action")
        return None if action == ACTION else f"structuredContent.data.Action is {action!r}, not {ACTION!r}"

    def http_called(status: int, headers, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {x402_throughput._text(body)}"
        action = json.loads(body).get("data", {}).get("Action")
        return None if action == ACTION else f"data.Action is {action!r}, not {ACTION!r}"

    arguments = {"ImageURL": IMAGE_URL}
    return {
        "tools/list": [
            Kind("MCP tools/list", mcp("tools/list"), Known(tools_listed)),
            Kind("GET /openapi.json", http_load.Request("GET", "/openapi.json", b"", {}), Known(openapi_listed)),
            Kind("GET /api/services", http_load.Request("GET", "/api/services", b"", {}), Known(services_listed)),
        ],
        "tools/call": [
            Kind("MCP tools/call",
                 mcp("tools/call", {"name": TOOL_NAME, "arguments": {**arguments, "paymentToken": token}}, bearer),
                 mcp_called),
            Kind(f"POST /api/tools/{SERVICE_ID}",
                 http_load.Request("POST", f"/api/tools/{SERVICE_ID}", json.dumps(arguments).encode(),
                                   {**json_type, **bearer, "X-Payment-Token": token}),
                 http_called),
        ],
    }


def measure(server, groups: dict[str, list[Kind]]) -> dict[str, dict[int, dict[str, x402_throughput.Series]]]:
    """group -> connections -> kind label -> Series (warm-up on the first concurrency's series only)."""
    def run(served, kind: Kind, connections: int, seconds: float) -> http_load.Run:
        return http_load.for_duration(served.port, kind.request, kind.check, connections=connections,
                                      seconds=seconds)

    figures = {}
    for group, group_kinds in groups.items():
        figures[group] = {}
        for connections in CONNECTIONS:
            series = {kind.label: x402_throughput.Series() for kind in group_kinds}
            if connections == CONNECTIONS[0]:
                for kind in group_kinds:
                    series[kind.label].warm_up = run(server, kind, max(CONNECTIONS), WARM_UP_SECONDS)
            for _, kind in x402_throughput.turns(group_kinds, ROUNDS):
                series[kind.label].timed_round(server, run, kind, connections, SECONDS)
            figures[group][connections] = series
    return figures


def profile(groups: dict[str, list[Kind]]) -> None:
    """In-process (Django's test client, no sockets): median ms and SQL statements of each kind, then cProfile
    of the MCP ones.

    The paid calls spend the same token; the upstream is still the emulator's gunicorn.
    """
    import cProfile
    import pstats

    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    calls = int(os.environ.get("BENCH_PROFILE_CALLS", "200"))
    client = Client()

    def one(kind: Kind) -> None:
        request = kind.request
        headers = {name: value for name, value in request.headers.items() if name != "Content-Type"}
        response = client.generic(request.method, request.path, request.body,
                                  content_type=request.headers.get("Content-Type", ""), headers=headers)
        problem = kind.check(response.status_code, response.headers, response.content)
        assert problem is None, problem

    print(f"\nIn-process ({calls} requests each, interleaved within a group, Django test client, no profiler)\n")
    print("| request | p50 ms | SQL statements |\n|---|---:|---:|")
    for group_kinds in groups.values():
        samples = {kind.label: [] for kind in group_kinds}
        for kind in group_kinds:
            one(kind)  # warm up
        for _ in range(calls):
            for kind in group_kinds:  # taking turns, so drift falls on all
                start = time.perf_counter()
                one(kind)
                samples[kind.label].append((time.perf_counter() - start) * 1000)
        for kind in group_kinds:
            with CaptureQueriesContext(connection) as queries:
                one(kind)
            print(f"| {kind.label} | {statistics.median(samples[kind.label]):.2f} | {len(queries)} |")
    for group_kinds in groups.values():
        mcp = group_kinds[0]
        profiler = cProfile.Profile()
        profiler.runcall(lambda kind=mcp: [one(kind) for _ in range(calls)])
        print(f"\ncProfile of {calls} in-process {mcp.label} (by own time, then cumulative):\n")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


def main() -> None:
    """Measure and print; raise SystemExit when any answer or record was wrong. Cleans up after itself."""
    started = time.monotonic()
    gunicorn = paid_call.gunicorn_start
    with paid_call.test_database("bench-mcp.sqlite3") as db_url, ExitStack() as stack:
        service = Service.objects.select_related("pricing_policy").get(id=SERVICE_ID)
        secret, token = paid_call.paid_token(service)
        groups = kinds(secret, token)
        # Kept alive longer than aliyun_client pools a connection (see x402_throughput.main).
        emulator = stack.enter_context(x402_throughput.serving("emulator", gunicorn, db_url,
                                                               extra_args=("--keep-alive", "60")))
        upstream = f"http://127.0.0.1:{emulator.port}/sandbox/aliyun/{{product}}"
        server = stack.enter_context(x402_throughput.serving("Server402", gunicorn, db_url,
                                                             extra_env={"ALIBABA_CLOUD_ENDPOINT": upstream}))
        figures, machine = measured(server, emulator, groups)
        every = [(f"{label} x{connections}", series) for by_connections in figures.values()
                 for connections, by_kind in by_connections.items() for label, series in by_kind.items()]
        failures = [failure for name, series in every for failure in series.failures(name)]
        if not failures:
            paid = sum(series.answers_with_warm_up for by_kind in figures["tools/call"].values()
                       for series in by_kind.values())
            failures = paid_call.records_check(service, token, paid)
        if os.environ.get("BENCH_PROFILE") and not failures:
            with override_settings(ALIBABA_CLOUD_ENDPOINT=upstream):
                profile(groups)
        log_tails = {s.name: s.log_path.read_text()[-3000:] for s in (emulator, server)} if failures else {}
    report(groups, figures, machine, [series for _, series in every], failures, log_tails,
           time.monotonic() - started)


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has worked since boot (Linux's /proc/stat); None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq ...: all but idle and iowait is work done on this machine.
    user, nice, system, _idle, _iowait, irq, softirq = (int(field) for field in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def bench_cpu_seconds(*servers) -> float | None:
    """CPU seconds so far of this process (the load's client) and of the servers' process groups."""
    groups = [x402_throughput.process_group_cpu_seconds(server.process_group) for server in servers]
    if None in groups:
        return None
    mine = os.times()
    return mine.user + mine.system + sum(groups)


def database_cpu_seconds() -> float | None:
    """CPU seconds so far of a local PostgreSQL (with the backends it has reaped) and Redis; None without /proc."""
    ticks = 0
    try:
        paths = [path for path in Path("/proc").iterdir() if path.name.isdigit()]
    except OSError:
        return None
    for path in paths:
        try:
            if (path / "comm").read_text().strip() not in ("postgres", "redis-server"):
                continue
            fields = (path / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        # utime, stime, and the children's: a backend's time moves to the postmaster's when it exits.
        ticks += sum(int(field) for field in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Machine:
    """What the machine did while the bench timed: its CPUs' busy time, this bench's and the databases' shares.

    On a shared machine other work (a test run, say) takes CPU from the server and lowers every rate; this
    says how much, so a run under load can be recognized and redone.
    """

    wall: float = 0.0
    busy: float | None = None
    bench: float | None = None
    databases: float | None = None

    def note(self) -> str:
        if None in (self.busy, self.bench, self.databases):
            return ""
        return (f"While timing ({self.wall:.0f} s), the {os.cpu_count()} CPUs worked {self.busy:.0f} CPU-s of "
                f"{self.wall * os.cpu_count():.0f}: this bench (client, Server402, emulator) {self.bench:.0f}, "
                f"local PostgreSQL and Redis {self.databases:.0f}, other processes "
                f"{max(0.0, self.busy - self.bench - self.databases):.0f}.")


def measured(server, emulator, groups: dict[str, list[Kind]]) -> tuple[dict, Machine]:
    """measure(), and what the machine did meanwhile."""
    def now() -> tuple:
        return time.monotonic(), machine_busy_seconds(), bench_cpu_seconds(server, emulator), database_cpu_seconds()

    before = now()
    figures = measure(server, groups)
    after = now()
    machine = Machine(wall=after[0] - before[0])
    if None not in before + after:
        machine.busy, machine.bench, machine.databases = (b - a for a, b in zip(before[1:], after[1:], strict=True))
    return figures, machine


def report(groups: dict, figures: dict, machine: Machine, every: list, failures: list[str], log_tails: dict,
           seconds: float) -> None:
    engine = connection.vendor + (" + Redis cache" if settings.REDIS_URL else "")
    print(f"\nMCP throughput ({engine}; gunicorn {paid_call.WORKERS} workers x {paid_call.THREADS} threads; "
          f"{ROUNDS} rounds of {SECONDS:g} s per concurrency, kinds taking turns; {os.cpu_count()} CPUs shared "
          "by the server, its upstream emulator and the client)")
    if all(series.per_second for series in every):
        for group, group_kinds in groups.items():
            twin = group_kinds[1].label
            print(f"\n{group}: answers per second and Server402's CPU ms per answer; vs twin: the ratio to "
                  f"{twin}'s (lowest-highest of the {ROUNDS} rounds)\n")
            print("| connections | request | per s | vs twin | CPU ms per answer | CPU vs twin |")
            print("|---:|---|---:|---:|---:|---:|")
            for connections, by_kind in figures[group].items():
                for kind in group_kinds:
                    ours, theirs = by_kind[kind.label], by_kind[twin]
                    label = f"{kind.label} (twin)" if kind.label == twin else kind.label
                    ratio = "1.00x" if ours is theirs else x402_throughput._ratio(ours, theirs)
                    cpu_ratio = ("n/a" if None in (ours.cpu_ms_per_answer, theirs.cpu_ms_per_answer)
                                 else f"{ours.cpu_ms_per_answer / theirs.cpu_ms_per_answer:.2f}x")
                    print(f"| {connections} | {label} | {x402_throughput._rate(ours.per_second)} | {ratio} "
                          f"| {x402_throughput._cpu(ours)} | {cpu_ratio} |")
    print(f"\n{machine.note()}\nFailed requests: {sum(s.failure_count for s in every)} of "
          f"{sum(s.requests for s in every)} timed (warm-ups checked too); this section took {seconds:.0f} s "
          "(test database, two servers and warm-up included)")
    x402_throughput.fail_on(failures, log_tails, bench="MCP bench")

if __name__ == "__main__":
    standalone.run(main, _own_var_dir)

"""A small closed-loop load generator for the throughput benches: N keep-alive connections, one thread each.

Each thread sends its next request as soon as the previous answer is read, so
the server always has N requests in hand: what is counted is how many answers
it gives at that concurrency. http.client keeps the client's cost per request
low (well under a millisecond) and the same for every server it is pointed at.

Each passing answer's latency (from sending the request to reading the whole
answer, on the client's clock) is kept, for percentiles under load (bench/load.py).
"""

import http.client
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message

# A check gets (status, headers, body) and returns None, or what was wrong in a sentence.
Check = Callable[[int, Message, bytes], str | None]
MAX_FAILURES_KEPT = 20


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    headers: dict


@dataclass
class Run:
    """What one run did: answers that passed the check, those that did not, and the wall time."""

    answers: int = 0
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # of the answers that passed
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def per_second(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0

    def add(self, problem: str | None, latency_ms: float | None = None) -> None:
        with self._lock:
            if problem is None:
                self.answers += 1
                if latency_ms is not None:
                    self.latencies_ms.append(latency_ms)
                return
            self.failure_count += 1
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append(problem)


def _send(connection: http.client.HTTPConnection, request: Request, check: Check) -> tuple[str | None, float]:
    """(what was wrong or None, ms from sending to the answer read in full: the check is not timed)."""
    sent = time.perf_counter()
    try:
        connection.request(request.method, request.path, body=request.body, headers=request.headers)
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as error:
        connection.close()  # the next request opens a new connection
        return f"{error.__class__.__name__}: {error}", (time.perf_counter() - sent) * 1000
    latency_ms = (time.perf_counter() - sent) * 1000
    try:
        return check(response.status, response.headers, body), latency_ms
    except Exception as error:  # noqa: BLE001 - an answer the check cannot even read is a failed answer
        return f"unreadable answer ({error.__class__.__name__}: {error}): {body[:200]!r}", latency_ms


def _drive(port: int, connections: int, next_request: Callable[[float], Request | None], check: Check) -> Run:
    """Run `connections` threads until next_request(seconds since the start) says None.

    The clock starts when every connection is open and stops at the last answer.
    """
    run = Run()
    started: list[float] = []
    ready = threading.Barrier(connections, action=lambda: started.append(time.perf_counter()))
    finished: list[float] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            try:
                connection.connect()  # outside the timed part
            except OSError:
                ready.abort()  # the other threads stop waiting; the run fails below
                raise
            ready.wait(timeout=60)
            while (request := next_request(time.perf_counter() - started[0])) is not None:
                run.add(*_send(connection, request, check))
            finished.append(time.perf_counter())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(finished) != connections:
        raise RuntimeError(f"{connections - len(finished)} load threads could not connect or died")
    run.seconds = max(finished) - started[0]
    return run


def for_duration(port: int, request: Request | Callable[[], Request], check: Check, *, connections: int,
                 seconds: float) -> Run:
    """The same request over and over for `seconds` (answers in flight at the end are waited for and counted).

    `request` may be a function making each request (called in the sending thread), for requests that must
    differ (a fresh signature) or belong to their connection (its own credentials).
    """
    make = request if callable(request) else lambda: request
    return _drive(port, connections, lambda elapsed: make() if elapsed < seconds else None, check)


def for_each(port: int, requests: list[Request], check: Check, *, connections: int) -> Run:
    """Every request once (e.g. each with its own payment signature), as fast as the server answers."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for request in requests:
        pending.put(request)

    def next_request(_elapsed: float) -> Request | None:
        try:
            return pending.get_nowait()
        except queue.Empty:
            return None

    return _drive(port, connections, next_request, check)

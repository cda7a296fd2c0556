"""Faults, end to end: what the caller hears, what the database keeps, what the operator sees.

Each test breaks one thing the paid call depends on, for real and on loopback:
an upstream that hangs, resets the connection or answers 503; a facilitator
whose /settle does not answer in time; the PostgreSQL connection terminated
mid-call (pg_terminate_backend); a Redis that accepts connections and never
answers. Then it reads the answer, the rows (ToolCall, Payment,
X402Authorization, the key's balance) and the dashboard page an operator
would open. The rule is the same everywhere: nothing charged twice, nothing
lost, every state visible. tests/payments covers each refusal in-process;
these follow one fault from the wire to the dashboard.
"""

import html
import json
import re
import signal
import socket
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient
from x402.http.utils import decode_payment_response_header

from catalog.models import PricingPolicy
from health.models import HealthRun
from jobs.models import Job
from jobs.services import REQUEUE_AFTER, jobs_reap
from jobs.tasks import run_job
from payments.models import ApiKey, Payment, ToolCall, X402Authorization
from payments.services import api_key_top_up, tool_calls_reconcile
from server402 import cache_outages

# The loopback facilitator of the facilitator tests (the fixture, used through remote_facilitator): the SDK's
# own verifier behind HTTP, scriptable per path, recording what it is asked.
from tests.payments.test_facilitators import honest, local_facilitator, slow  # noqa: F401
from tests.production.gated_upstream import GatedUpstream
from tests.server402.test_settings import settings_of

URL = "/api/tools/celebrity-recognition"
IMAGE = "https://example.com/face.jpg"
# Cents left on a token buyer's key after the purchase: no fault may touch them.
BALANCE_LEFT = 500
# Generous bounds for what must end by itself; a fault that hangs fails the test at the bound instead.
BOUND_SECONDS = 60
NONCE_USED = "invalid_exact_evm_nonce_already_used"


def _post(api, **headers):
    return api.generic("POST", URL, json.dumps({"ImageURL": IMAGE}), content_type="application/json", **headers)


# --- Servers that misbehave -------------------------------------------------------

UNAVAILABLE = "The request has failed due to a temporary failure of the server."


def _read_request(conn: socket.socket) -> None:
    """Read one HTTP request (its headers, then Content-Length bytes): the client has sent it all."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1]) if b"ength" in head else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


class LoopbackFault:
    """A TCP server on 127.0.0.1 that fails one way: `hang` accepts and never answers (nor reads), `reset`
    reads the request then resets the connection (RST), `503` answers every request with Alibaba's
    ServiceUnavailable. It counts the connections it accepted."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.connections = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{product}}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._held.append(conn)
            if self.behaviour != "hang":
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            _read_request(conn)
            if self.behaviour == "reset":
                # Linger on, timeout 0: close() sends RST instead of FIN, as a crashed proxy or a firewall does.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                body = json.dumps({"RequestId": "unavailable-request", "Code": "ServiceUnavailable",
                                   "Message": UNAVAILABLE}).encode()
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()


@pytest.fixture
def loopback_fault():
    """`loopback_fault(behaviour)` starts a LoopbackFault; all are closed after the test (freeing anything
    still waiting on one)."""
    started = []

    def start(behaviour: str) -> LoopbackFault:
        started.append(LoopbackFault(behaviour))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- How the caller pays ----------------------------------------------------------

@dataclass
class Purchase:
    """One way of paying for the call: `headers` to send, and the key whose balance must not move (tokens)."""

    kind: str
    headers: dict
    key: ApiKey | None = None

    @property
    def x402(self) -> bool:
        return self.kind != "token"


PAYING = ["token", "x402 settle_first", "x402 settle_after"]


def _x402_headers(api, payer) -> dict:
    challenge = _post(api)
    assert challenge.status_code == 402
    return {"HTTP_PAYMENT_SIGNATURE": payer.header(challenge["PAYMENT-REQUIRED"])}


@pytest.fixture
def purchase(request, api, make_key, paid_token, x402_payer) -> Purchase:
    """The test's `paying` parameter made real: a one-call token bought from a key's balance (with
    BALANCE_LEFT more on the key), or an x402 authorization under the named settle mode."""
    kind = request.node.callspec.params["paying"]
    if kind == "token":
        key, secret = make_key()
        _, token = paid_token("celebrity-recognition", key)
        api_key_top_up(api_key=key, amount_cents=BALANCE_LEFT)
        return Purchase(kind, {"HTTP_X_PAYMENT_TOKEN": token, "HTTP_AUTHORIZATION": f"Bearer {secret}"}, key)
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=kind.split()[1])
    return Purchase(kind, _x402_headers(api, x402_payer))


def _balance_untouched(purchase: Purchase) -> None:
    if purchase.key is not None:
        purchase.key.refresh_from_db()
        assert purchase.key.balance_cents == BALANCE_LEFT


# --- What the operator sees ----------------------------------------------------------

def _cells(row: str) -> list[str]:
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", cell)).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


@dataclass
class PaymentPage:
    """/dashboard/payments/<id>/ as an operator reads it."""

    state: str
    cards: dict  # label -> figure
    calls: list  # [started, outcome, http, latency, charged, paid by, upstream request id, error]
    receipts: list  # [presented, payer, nonce, network, transaction, status, settled, error]

    def call(self) -> dict:
        (row,) = self.calls
        return dict(zip(["started", "outcome", "http", "latency", "charged", "paid_by", "request_id", "error"], row,
                        strict=True))

    def receipt(self) -> dict:
        (row,) = self.receipts
        return dict(zip(["presented", "payer", "nonce", "network", "transaction", "status", "settled", "error"],
                        row, strict=True))


def _payment_page(staff, payment_id: str) -> PaymentPage:
    response = staff.get(f"/dashboard/payments/{payment_id}/")
    assert response.status_code == 200
    page = response.content.decode()

    def rows(table: str) -> list[list[str]]:
        body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', page, re.S)[1]
        return [cells for cells in map(_cells, re.findall(r"<tr>(.*?)</tr>", body, re.S)) if len(cells) > 1]

    state = re.search(r'<h1><code>[^<]*</code> <span class="health status-(\w+)">', page)[1]
    cards = {label: figure for figure, label in re.findall(
        r'<div class="figure">(.*?)</div><div class="label">(.*?)</div>', page)}
    return PaymentPage(state, cards, rows("payment-calls"), rows("payment-receipts"))


# --- The upstream hangs, resets, answers 503 ---------------------------------------------

# behaviour -> (status, sentence, call outcome, the call's outcome on the dashboard, connections the upstream sees)
UPSTREAM_FAULTS = {
    # A POST that was sent and not answered may have run (and been billed) upstream: it is not sent again.
    "hang": (504, "the upstream did not answer in time", "timeout", "Timeout", 1),
    "reset": (502, "the upstream failed: the upstream connection failed: ReadError", "upstream_error",
              "Upstream failure", 1),
    # 503 is safe to repeat: every attempt is made, each answered 503.
    "503": (502, f"the upstream failed: {UNAVAILABLE}", "upstream_error", "Upstream failure", 3),
}


@pytest.mark.parametrize("paying", PAYING)
@pytest.mark.parametrize("behaviour", list(UPSTREAM_FAULTS))
def test_an_upstream_that_fails_charges_nothing_and_the_payment_page_shows_why(
        upstream_emulator, settings, api, staff, x402_payer, loopback_fault, purchase, behaviour, paying):
    status, sentence, outcome, shown, connections = UPSTREAM_FAULTS[behaviour]
    fault = loopback_fault(behaviour)
    settings.ALIBABA_CLOUD_ENDPOINT = fault.endpoint
    settings.ALIBABA_CLOUD_READ_TIMEOUT = 0.3
    settings.ALIBABA_CLOUD_ATTEMPTS = 3

    response = _post(api, **purchase.headers)

    body = response.json()
    assert (response.status_code, body["error"]) == (status, sentence)
    assert fault.connections == connections
    call = ToolCall.objects.get()
    assert (call.outcome, call.http_status, call.amount_cents) == (outcome, status, 0)
    payment = call.payment
    page = _payment_page(staff, payment.pk)
    assert (page.call()["outcome"], page.call()["http"], page.call()["charged"]) == (shown, str(status), "0.00")
    _balance_untouched(purchase)
    if purchase.kind == "token":
        assert body["charged"] is False and "PAYMENT-RESPONSE" not in response
        assert (payment.status, payment.used_calls) == ("paid", 0)
        assert page.cards["calls remaining"] == "1" and page.receipts == []
    elif purchase.kind == "x402 settle_first":
        # The money moved before the upstream failed: the caller holds a token worth the call it did not get.
        assert body["charged"] is True and body["paymentId"] == payment.pk and body["retryToken"]
        assert decode_payment_response_header(response["PAYMENT-RESPONSE"]).success is True
        assert (payment.status, payment.remaining_calls) == ("paid", 1)
        assert X402Authorization.objects.get().status == "settled"
        assert (page.cards["calls remaining"], page.receipt()["status"]) == ("1", "Settled")
    else:
        assert body["charged"] is False and "retryToken" not in body and "PAYMENT-RESPONSE" not in response
        assert (payment.status, X402Authorization.objects.get().status) == ("pending", "unsettled")
        assert page.receipt()["status"] == "Not settled: the call yielded no result"

    # The upstream recovers: what the answer invited the caller to do buys exactly one result.
    settings.ALIBABA_CLOUD_ENDPOINT = upstream_emulator
    if purchase.kind == "token":
        retried = _post(api, **purchase.headers)
    elif purchase.kind == "x402 settle_first":
        retried = _post(api, HTTP_X_PAYMENT_TOKEN=body["retryToken"])
    else:
        replayed = _post(api, **purchase.headers)
        assert (replayed.status_code, replayed.json()["invalidReason"]) == (402, NONCE_USED)
        retried = _post(api, **_x402_headers(api, x402_payer))
    assert retried.status_code == 200, retried.json()
    assert list(ToolCall.objects.order_by("started_at").values_list("outcome", flat=True)) == [outcome, "succeeded"]
    assert X402Authorization.objects.filter(status="settled").count() == (1 if purchase.x402 else 0)
    _balance_untouched(purchase)
    if purchase.kind != "x402 settle_after":
        payment.refresh_from_db()
        assert (payment.used_calls, payment.max_calls) == (1, 1)


# --- The facilitator does not answer a settlement in time -----------------------------------

@pytest.fixture
def remote_facilitator(settings, request):
    """x402 verified and settled by the loopback facilitator over HTTP."""
    facilitator = request.getfixturevalue("local_facilitator")
    settings.X402_FACILITATOR_URL = facilitator.url
    return facilitator


@pytest.mark.parametrize("mode", ["settle_first", "settle_after"])
def test_a_settlement_the_facilitator_does_not_answer_in_time_is_left_unknown_and_never_paid_twice(
        upstream_emulator, settings, api, staff, remote_facilitator, x402_payer, mode):
    settings.X402_FACILITATOR_TIMEOUT = 0.3
    # It does settle, on its chain, after the caller stopped waiting: the outcome is truly unknown here.
    remote_facilitator.script("/settle", slow(1.5))
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=mode)
    headers = _x402_headers(api, x402_payer)

    response = _post(api, **headers)

    body = response.json()
    payment = Payment.objects.get()
    assert response.status_code == 402 and "data" not in body
    assert (body["invalidReason"], body["settlement"], body["paymentId"]) == (
        "settlement_unconfirmed", "unknown", payment.pk)
    assert f"nothing was charged unless paymentId {payment.pk} says so" in body["error"]
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.error) == ("unknown", "the payment facilitator did not answer in time")
    assert (payment.status, payment.used_calls) == ("pending", 0)
    call = ToolCall.objects.get()
    assert (call.outcome, call.amount_cents) == ("settlement_failed", 0)
    # settle_first never called the upstream; settle_after did, and withheld the result.
    assert bool(call.upstream_request_id) is (mode == "settle_after")
    page = _payment_page(staff, payment.pk)
    assert page.state == "pending" and page.cards["calls remaining"] == "0"
    assert page.call()["outcome"] == "x402 settlement failed (result withheld)"
    assert (page.receipt()["status"], page.receipt()["error"]) == (
        "Settlement outcome unknown (facilitator did not answer)", "the payment facilitator did not answer in time")
    assert page.receipt()["payer"] == x402_payer.address.lower()

    # The payer sends the same authorization again: refused by the ledger, the facilitator not asked.
    again = _post(api, **headers)
    assert (again.status_code, again.json()["invalidReason"]) == (402, NONCE_USED)
    assert remote_facilitator.paths() == ["/verify", "/settle"]
    assert (Payment.objects.count(), ToolCall.objects.count(), X402Authorization.objects.count()) == (1, 1, 1)
    assert X402Authorization.objects.get().status == "unknown"


# --- The database connection is cut mid-call (PostgreSQL) ------------------------------------

class CallInAThread:
    """A paid call made by another thread on a database connection of its own, as a web worker's is.

    `backend_pid` is that connection's PostgreSQL backend (known once
    `connected` is set), `backend_pid_after` the one it uses after the call.
    `database_goes_away(port)` points that thread's next connections at a
    port where nothing listens: the database stays unreachable for it.
    """

    def __init__(self, headers: dict):
        self.headers = headers
        self.connected = threading.Event()
        self.backend_pid = self.backend_pid_after = None
        self.response = self.error = None
        self._settings = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(BOUND_SECONDS), self.error

    def _backend_pid(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    def _run(self) -> None:
        try:
            # This thread's own copy of the connection settings, so database_goes_away touches no other thread.
            connection.settings_dict = self._settings = dict(connection.settings_dict)
            self.backend_pid = self._backend_pid()
            self.connected.set()
            self.response = _post(APIClient(), **self.headers)
            self.backend_pid_after = self._backend_pid()
        except BaseException as error:  # noqa: B036 (handed to the test, which fails on it)
            self.error = error
        finally:
            self.connected.set()
            connection.close()

    def database_goes_away(self, port: int) -> None:
        self._settings.update(HOST="127.0.0.1", PORT=port)

    def answer(self):
        self._thread.join(BOUND_SECONDS)
        assert not self._thread.is_alive(), f"the call did not end within {BOUND_SECONDS} s"
        if self.response is None:
            raise AssertionError(f"the call raised instead of answering: {self.error!r}") from self.error
        return self.response


def _terminate_backend(pid: int) -> None:
    """What a database restart, a failover or an operator does to a connection: the server ends it."""
    with connection.cursor() as cursor:
        # Waits (up to 10 s) until the backend is gone, so the call cannot race the termination.
        cursor.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])
        assert cursor.fetchone()[0] is True


def _cut_while_the_upstream_holds_it(call: CallInAThread, upstream, *, unreachable_port: int | None = None) -> None:
    """Once `call` waits on the gated upstream: end its database session (and, given a port, keep the database
    out of reach for its fresh connection), then let the upstream answer."""
    assert upstream.arrived.wait(BOUND_SECONDS), call.error
    _terminate_backend(call.backend_pid)
    if unreachable_port is not None:
        call.database_goes_away(unreachable_port)
    upstream.gate.set()


@pytest.mark.parametrize("paying", PAYING)
def test_a_database_connection_cut_while_the_upstream_works_is_survived_and_charged_once(
        postgresql_only, committed_db, gated_upstream, remote_facilitator, staff, purchase, paying):
    call = CallInAThread(purchase.headers)
    _cut_while_the_upstream_holds_it(call, gated_upstream)

    response = call.answer()

    assert response.status_code == 200, response.json()
    assert response.json()["requestId"] == GatedUpstream.REQUEST_ID
    assert call.backend_pid_after != call.backend_pid  # the call was finished on a fresh connection
    recorded = ToolCall.objects.get()
    assert (recorded.outcome, recorded.http_status, recorded.amount_cents) == ("succeeded", 200, 20)
    payment = recorded.payment
    assert (payment.status, payment.used_calls) == ("paid", 1)
    _balance_untouched(purchase)
    page = _payment_page(staff, payment.pk)
    assert (page.call()["outcome"], page.call()["charged"], page.cards["calls used"]) == ("Succeeded", "0.20", "1/1")
    if purchase.x402:
        assert decode_payment_response_header(response["PAYMENT-RESPONSE"]).success is True
        assert remote_facilitator.paths().count("/settle") == 1
        assert X402Authorization.objects.get().status == "settled"
        assert page.receipt()["status"] == "Settled"


def test_a_database_that_stays_unreachable_answers_503_and_the_reconcile_gives_the_token_call_back(
        postgresql_only, committed_db, gated_upstream, closed_port, staff, api, make_key, paid_token):
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    call = CallInAThread({"HTTP_X_PAYMENT_TOKEN": token, "HTTP_AUTHORIZATION": f"Bearer {secret}"})
    _cut_while_the_upstream_holds_it(call, gated_upstream, unreachable_port=closed_port)

    response = call.answer()

    body = response.json()
    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert body == {
        "error": "the database became unavailable before this call could be recorded, so its result is withheld; "
                 "its token call is given back automatically within minutes: retry then",
        "charged": False, "paymentId": payment.pk}
    # What the database holds meanwhile: the call in progress, its token call taken.
    recorded = ToolCall.objects.get()
    payment.refresh_from_db()
    assert (recorded.outcome, payment.used_calls) == ("in_progress", 1)

    # The reconcile task (payments.tasks.reconcile_abandoned_calls, every 5 minutes, for calls older than
    # any call can last) gives it back; here without waiting for the call to age.
    assert tool_calls_reconcile(older_than=timedelta(0)) == 1

    recorded.refresh_from_db()
    payment.refresh_from_db()
    assert (recorded.outcome, recorded.amount_cents, payment.used_calls) == ("abandoned", 0, 0)
    page = _payment_page(staff, payment.pk)
    assert (page.call()["outcome"], page.cards["calls remaining"]) == ("Cut off midway and reconciled", "1")
    retried = _post(api, HTTP_X_PAYMENT_TOKEN=token, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert retried.status_code == 200, retried.json()
    payment.refresh_from_db()
    key.refresh_from_db()
    assert (payment.used_calls, key.balance_cents) == (1, 0)


def test_a_settlement_the_database_cannot_record_is_handed_to_the_payer_and_left_unknown_for_the_operator(
        postgresql_only, committed_db, gated_upstream, remote_facilitator, closed_port, staff, api, x402_payer,
        caplog):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode="settle_after")
    headers = _x402_headers(api, x402_payer)
    call = CallInAThread(headers)
    _cut_while_the_upstream_holds_it(call, gated_upstream, unreachable_port=closed_port)

    response = call.answer()

    body = response.json()
    payment = Payment.objects.get()
    assert response.status_code == 503 and "data" not in body
    assert (body["settlement"], body["paymentId"]) == ("unknown", payment.pk)
    # The facilitator did settle: the payer holds its receipt, and the operator's log names the transaction.
    settlement = decode_payment_response_header(response["PAYMENT-RESPONSE"])
    assert settlement.success is True
    assert remote_facilitator.paths() == ["/verify", "/settle"]
    logged = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(settlement.transaction in line and payment.pk in line for line in logged), logged

    assert tool_calls_reconcile(older_than=timedelta(0)) == 1
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ToolCall.objects.get().outcome) == ("unknown", "abandoned")
    page = _payment_page(staff, payment.pk)
    assert page.receipt()["status"] == "Settlement outcome unknown (facilitator did not answer)"
    assert page.call()["outcome"] == "Cut off midway and reconciled"
    # The same authorization again is refused without a second settlement.
    again = _post(api, **headers)
    assert (again.status_code, again.json()["invalidReason"]) == (402, NONCE_USED)
    assert remote_facilitator.paths() == ["/verify", "/settle"]


def test_a_database_connection_cut_before_the_payment_is_taken_answers_503_and_charges_nothing(
        postgresql_only, committed_db, upstream_emulator, remote_facilitator, api, x402_payer):
    verifying, gate = threading.Event(), threading.Event()

    def held(facilitator, operation, body):
        verifying.set()
        gate.wait(BOUND_SECONDS)
        return honest(facilitator, operation, body)

    remote_facilitator.script("/verify", held)
    headers = _x402_headers(api, x402_payer)
    call = CallInAThread(headers)
    assert verifying.wait(BOUND_SECONDS), call.error
    _terminate_backend(call.backend_pid)
    gate.set()

    response = call.answer()

    assert (response.status_code, response["Retry-After"]) == (503, "5")
    assert response.json() == {"error": "the database is unavailable; nothing was charged, retry shortly",
                               "charged": False}
    assert not (Payment.objects.exists() or ToolCall.objects.exists() or X402Authorization.objects.exists())
    # Nothing was written, so the same authorization still pays for one call, settled once.
    retried = _post(api, **headers)
    assert retried.status_code == 200, retried.json()
    assert remote_facilitator.paths() == ["/verify", "/verify", "/settle"]
    assert X402Authorization.objects.get().status == "settled"


# --- Redis stops answering -----------------------------------------------------------------

class StillWaiting(BaseException):
    """Raised into a test stuck on a server that never answers (BaseException: no `except Exception` or
    OSError handler on the way can swallow it)."""


@contextmanager
def ending_within(seconds: int):
    """Fail the test if the block is still running after `seconds` (the test runs in the main thread)."""
    def expire(signum, frame):
        raise StillWaiting(f"still waiting after {seconds} s: a server that never answers hangs this")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _redis_settings(**environment) -> list:
    """[CACHES, the broker's transport options, its publish retry policy, its connection timeout] as
    server402.settings makes them from `environment`, in a fresh process."""
    return json.loads(settings_of(
        "__import__('json').dumps([s.CACHES, s.CELERY_BROKER_TRANSPORT_OPTIONS, s.CELERY_TASK_PUBLISH_RETRY_POLICY,"
        " s.CELERY_BROKER_CONNECTION_TIMEOUT])", **environment))


def test_redis_socket_timeout_bounds_the_cache_and_the_broker():
    caches, transport, publish_retry, connection_timeout = _redis_settings(
        REDIS_URL="redis://redis.internal:6379/3", REDIS_SOCKET_TIMEOUT="0.25")
    assert caches["default"]["OPTIONS"] == {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
    assert transport == {"socket_connect_timeout": 0.25, "socket_timeout": 0.25}
    assert (connection_timeout, publish_retry["max_retries"]) == (0.25, 1)
    # Unset, a second: Redis answers in well under a millisecond.
    assert _redis_settings(REDIS_URL="redis://redis.internal:6379/3")[1]["socket_timeout"] == 1.0


@pytest.fixture
def redis_never_answers(loopback_fault, settings, monkeypatch):
    """A Redis that accepts connections and never answers, as the cache (rate limits) and the Celery broker,
    each configured exactly as server402.settings configures them for such a REDIS_URL."""
    import kombu.pools

    from server402.celery import app
    from tests.celery_workers import forget_broker_connections

    hung = loopback_fault("hang")
    url = f"redis://127.0.0.1:{hung.port}/0"
    caches, transport, publish_retry, connection_timeout = _redis_settings(REDIS_URL=url, REDIS_SOCKET_TIMEOUT="0.5")
    assert caches["default"]["LOCATION"] == url
    settings.CACHES = caches
    # The upstream must not be the emulator here: it keeps its nonces in the same (hung) cache.
    saved = {name: app.conf[name] for name in ("broker_url", "broker_transport_options", "task_publish_retry_policy",
                                               "broker_connection_timeout")}
    app.conf.update(broker_url=url, broker_transport_options=transport, task_publish_retry_policy=publish_retry,
                    broker_connection_timeout=connection_timeout)
    forget_broker_connections(app)
    # What this test teaches the process about the cache stays in this test.
    monkeypatch.setattr(cache_outages, "_down_until", 0.0)
    yield hung
    app.conf.update(saved)
    kombu.pools.reset()
    forget_broker_connections(app)


def test_a_paid_call_goes_through_while_the_rate_limit_store_never_answers(
        upstream, settings, redis_never_answers, api, staff, make_key, paid_token, caplog):
    key, secret = make_key(rate_limit_per_minute=5, daily_quota=100)
    payment, token = paid_token("celebrity-recognition", key)

    with ending_within(BOUND_SECONDS):
        response = _post(api, HTTP_X_PAYMENT_TOKEN=token, HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 200, response.json()
    payment.refresh_from_db()
    assert (payment.used_calls, ToolCall.objects.get().outcome) == (1, "succeeded")
    # The operator's pages do without the cache too (the overview's statistics are summed from the database).
    with ending_within(BOUND_SECONDS):
        assert staff.get("/dashboard/").status_code == 200
        assert _payment_page(staff, payment.pk).call()["outcome"] == "Succeeded"
    # Failing open is loud: one ERROR naming the cause. Then the cache is left alone for a while: neither the
    # daily quota's window nor the overview asked it again.
    errors = [record for record in caplog.records if record.name == "server402.cache_outages"]
    assert [record.levelname for record in errors] == ["ERROR"]
    assert "TimeoutError" in errors[0].getMessage()
    assert "rate limits are not enforced, calls go through" in errors[0].getMessage()
    assert redis_never_answers.connections == 1


def test_a_job_is_accepted_while_the_broker_never_answers_and_nothing_is_lost(
        committed_db, upstream, settings, redis_never_answers, api, staff, make_key, paid_token, caplog):
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)

    with ending_within(BOUND_SECONDS):
        response = _post(api, HTTP_X_PAYMENT_TOKEN=token, HTTP_AUTHORIZATION=f"Bearer {secret}",
                         HTTP_PREFER="respond-async")

    assert response.status_code == 202, response.json()
    job = Job.objects.get()
    assert (response.json()["jobId"], job.status, job.call.outcome) == (job.pk, "queued", "in_progress")
    assert redis_never_answers.connections >= 1  # the broker was asked, and never answered
    assert any("could not be queued" in record.getMessage() for record in caplog.records)
    assert f"/dashboard/jobs/{job.pk}/" in staff.get("/dashboard/jobs/").content.decode()

    # The reaper queues it again (the broker still silent, it stays queued: nothing is lost)...
    with ending_within(BOUND_SECONDS):
        assert jobs_reap(now=timezone.now() + REQUEUE_AFTER + timedelta(seconds=1))["requeued"] == 1
    job.refresh_from_db()
    assert job.status == "queued"
    # ...and a worker that gets it once the broker is back makes the call, charged once.
    assert run_job(job.pk) == "succeeded"
    payment.refresh_from_db()
    assert (payment.used_calls, ToolCall.objects.get().outcome) == (1, "succeeded")
    assert "succeeded" in staff.get(f"/dashboard/jobs/{job.pk}/").content.decode()


def test_a_health_run_started_while_the_broker_never_answers_fails_with_a_message(
        committed_db, settings, redis_never_answers, staff):
    with ending_within(BOUND_SECONDS):
        response = staff.post("/dashboard/health/runs/", {"concurrency": "2", "services": ["face-detection"]})

    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert "The run could not be queued (" in page and "is the Celery worker's broker running?" in page
    run = HealthRun.objects.get()
    assert run.status == "failed" and run.error.startswith("could not be queued: OperationalError")
    assert redis_never_answers.connections >= 1
    runs = staff.get("/dashboard/health/runs/").content.decode()
    assert f"/dashboard/health/runs/{run.pk}/" in runs

"""Server402 scaled out on one machine: two gunicorn servers and two Celery workers sharing PostgreSQL and Redis.

Clients race across both servers over real HTTP, so what keeps money right is
what the processes share (row locks, unique constraints), never one process's
memory: a 10-call token serves exactly 10 calls, one x402 authorization pays
for exactly one. A health run started on one server is done by the workers and
read through the other.
"""

import re
from collections import Counter
from contextlib import ExitStack

import httpx
import pytest
from django.db import connection
from x402.http.utils import decode_payment_response_header

from catalog.models import PricingPolicy, Service
from health.models import HealthRun
from payments.models import ApiKey, Payment, ToolCall, X402Authorization
from tests.celery_workers import CeleryWorkers, Worker, wait_for, why_not_runnable
from tests.conftest import run_concurrently
from tests.production.servers import GunicornServer, GunicornServers

_not_runnable = why_not_runnable()
# One cluster serves the module: under xdist's --dist loadgroup its tests stay on one worker, which boots it once.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_not_runnable), reason=_not_runnable),
              pytest.mark.xdist_group("multi-process-cluster")]

TOOL = "/api/tools/celebrity-recognition"
IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"
HEALTH_SERVICE_IDS = ["celebrity-recognition", "scene-recognition", "food-recognition", "face-detection"]
# Generous: two CPUs may be shared with other sessions' servers and workers.
TIMEOUT = httpx.Timeout(60)


@pytest.fixture(scope="module")
def _processes(django_db_setup, django_db_blocker, upstream_emulator, tmp_path_factory):
    """Two Celery workers and two gunicorn servers (2 processes x 4 threads each), booted side by side once for
    the module, as a deployment keeps running between clients: a boot costs seconds of imports per process.

    Each test still starts from a database of its own (`cluster` flushes it
    after the test); the processes hold no transaction between requests, so the
    flush does not wait for them. On leaving, every process is killed and its
    database sessions are gone before the test database is dropped.
    """
    directory = tmp_path_factory.mktemp("cluster")
    stack = ExitStack()
    try:
        celery_workers = stack.enter_context(CeleryWorkers(directory, upstream_endpoint=upstream_emulator))
        gunicorn_servers = stack.enter_context(GunicornServers(directory, upstream_endpoint=upstream_emulator))
        workers = [celery_workers.start(), celery_workers.start()]
        servers = gunicorn_servers.start_many(2, WEB_CONCURRENCY=2, WEB_THREADS=4)
        yield servers, workers
    finally:
        # Waiting for the processes' sessions to end takes a connection of the test's own, closed after.
        with django_db_blocker.unblock():
            stack.close()
            connection.close()


@pytest.fixture
def cluster(_processes, committed_db) -> tuple[list[GunicornServer], list[Worker]]:
    """The module's servers and workers, all still running, over a database whose rows are committed for
    real (they are other processes) and flushed after the test."""
    servers, workers = _processes
    for process in [*servers, *workers]:
        if process.exited():
            pytest.fail(f"a server or worker of the cluster exited; its output:\n{process.output()}")
    return servers, workers


def _alternating(servers: list[GunicornServer], index: int) -> str:
    return servers[index % len(servers)].url


def test_a_ten_call_token_raced_across_two_servers_serves_exactly_ten_calls(cluster, make_key, paid_token):
    servers, _ = cluster
    service = Service.objects.get(id="celebrity-recognition")
    PricingPolicy.objects.filter(pk=service.pricing_policy_id).update(max_calls=10)
    key, secret = make_key()
    payment, token = paid_token(service.id, key)
    assert (payment.max_calls, payment.status) == (10, "paid")

    def call(index):
        response = httpx.post(_alternating(servers, index) + TOOL, json={"ImageURL": IMAGE}, timeout=TIMEOUT,
                              headers={"X-Payment-Token": token, "Authorization": f"Bearer {secret}"})
        return response.status_code, response.json().get("error")

    outcomes = Counter(run_concurrently(call, 40))

    assert outcomes == {(200, None): 10, (402, "payment token has no remaining calls"): 30}
    payment.refresh_from_db()
    assert (payment.used_calls, payment.remaining_calls) == (10, 0)
    assert ToolCall.objects.filter(payment=payment, outcome="succeeded").count() == 10
    # Nothing else charged: no other call, payment or settlement, and the key paid for this payment only.
    assert ToolCall.objects.count() == 10 and Payment.objects.count() == 1
    assert not X402Authorization.objects.exists()
    assert ApiKey.objects.get(pk=key.pk).balance_cents == 0


def test_one_x402_authorization_raced_across_two_servers_pays_for_one_call(cluster, x402_payer):
    servers, _ = cluster
    challenge = httpx.post(servers[0].url + TOOL, json={"ImageURL": IMAGE}, timeout=TIMEOUT)
    assert challenge.status_code == 402, challenge.text
    signature = x402_payer.header(challenge.headers["PAYMENT-REQUIRED"])

    def call(index):
        response = httpx.post(_alternating(servers, index) + TOOL, json={"ImageURL": IMAGE}, timeout=TIMEOUT,
                              headers={"PAYMENT-SIGNATURE": signature})
        return response.status_code, response.json().get("invalidReason"), response.headers.get("PAYMENT-RESPONSE")

    answers = run_concurrently(call, 30)

    outcomes = Counter((status, reason) for status, reason, _ in answers)
    assert outcomes == {(200, None): 1, (402, "invalid_exact_evm_nonce_already_used"): 29}
    [receipt] = [decode_payment_response_header(header) for status, _, header in answers if status == 200]
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.transaction, ledger.payer) == (
        "settled", receipt.transaction, x402_payer.address.lower())
    assert receipt.success and receipt.transaction
    payment = Payment.objects.get()
    assert (payment.method, payment.status, payment.used_calls, payment.max_calls) == ("x402", "paid", 1, 1)
    call = ToolCall.objects.get()
    assert (call.outcome, call.payment_id, call.payment_method) == ("succeeded", payment.id, "x402")


def _form_token(page: httpx.Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def test_a_health_run_started_on_one_server_is_done_by_the_workers_and_read_on_the_other(cluster, operator):
    servers, workers = cluster
    first, second = servers[0].url, servers[1].url
    logged_before = [worker.log.stat().st_size for worker in workers]
    with httpx.Client(timeout=TIMEOUT) as browser:
        # The operator signs in and starts the run on one server, as a browser does: the form's CSRF token too.
        login = browser.get(first + "/dashboard/login/")
        signed_in = browser.post(first + "/dashboard/login/", data={
            "username": operator.username, "password": "pw", "csrfmiddlewaretoken": _form_token(login)})
        assert signed_in.status_code == 302, signed_in.text
        form = browser.get(first + "/dashboard/health/runs/")
        started = browser.post(first + "/dashboard/health/runs/", data={
            "services": HEALTH_SERVICE_IDS, "concurrency": "2", "csrfmiddlewaretoken": _form_token(form)})
        assert started.status_code == 302, started.text
        run_id = int(re.fullmatch(r"/dashboard/health/runs/(\d+)/", started.headers["Location"]).group(1))

        def read() -> HealthRun:
            for worker in workers:
                if worker.exited():
                    pytest.fail(f"a Celery worker exited during the run; its output:\n{worker.output()}")
            return HealthRun.objects.get(pk=run_id)

        run = wait_for(read, lambda run: run.is_finished, what="finished health run", timeout=60, interval=0.2)
        # Read through the other server, with the session the first one opened.
        page = browser.get(f"{second}/dashboard/health/runs/{run_id}/")

    assert run.status == HealthRun.Status.SUCCEEDED, run.error
    assert (run.trigger, run.started_by_id, run.done, run.total) == ("dashboard", operator.pk, 4, 4)
    assert {result.service_id: result.status for result in run.results.all()} == {
        service_id: "healthy" for service_id in HEALTH_SERVICE_IDS}
    assert page.status_code == 200
    assert 'data-status="succeeded" data-done="4" data-total="4"' in page.text
    rows = re.findall(r'<tr data-service="([^"]+)">.*?<span class="health health-(\w+)">', page.text, re.DOTALL)
    assert sorted(rows) == [(service_id, "healthy") for service_id in sorted(HEALTH_SERVICE_IDS)]
    # Done by a worker, not inline in the web server: a worker took the task from the broker and finished it.
    logs = "".join(worker.log.read_bytes()[offset:].decode(errors="replace")
                   for worker, offset in zip(workers, logged_before, strict=True))
    assert re.search(r"execute_health_run\[[^\]]+\] succeeded", logs), logs[-3000:]

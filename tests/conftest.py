import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
from django.test import override_settings
from rest_framework.test import APIClient

from catalog.services import REFERENCE_CATALOG, catalog_import

FIXTURES = Path(__file__).parent / "catalog" / "fixtures"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Every test database starts with the reference catalog; tests roll back their changes."""
    with django_db_blocker.unblock():
        catalog_import(paths=[REFERENCE_CATALOG])


@pytest.fixture(autouse=True)
def _statistics_cache_of_its_own(monkeypatch):
    """Each test's hourly-statistics sums are cached under its own keys (the cache outlives tests)."""
    import uuid

    from health import selectors

    monkeypatch.setattr(selectors, "CACHE_NAMESPACE", f"test-{uuid.uuid4().hex}")


@pytest.fixture(autouse=True)
def _no_anonymous_rate_limit():
    """Off unless a test turns it on: every test client calls from 127.0.0.1 and the cache outlives tests, so
    the suite's own unpaid calls would run into it (tests/production/test_attacks.py tests it)."""
    with override_settings(ANONYMOUS_RATE_LIMIT_PER_MINUTE=0):
        yield


@pytest.fixture
def clear_of_the_hour_turn():
    """Wait out the last 30 s of an hour: the closed hours' sums are cached per hour, so a test counting
    cache hits must not straddle the moment they are summed again."""
    from django.utils import timezone

    now = timezone.now()
    if now.minute == 59 and now.second >= 30:
        time.sleep(61 - now.second)


@pytest.fixture(scope="session")
def seed_001():
    return json.loads((FIXTURES / "seed_001_catalog_search.json").read_text())


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user("op", password="pw", is_staff=True)


@pytest.fixture
def staff(client, operator):
    """The test client, signed in to the dashboard as a staff operator."""
    client.force_login(operator)
    return client


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def upstream_emulator():
    """Server402's own app on a loopback port, so the upstream client reaches the emulator over real HTTP.

    The emulator view touches no database, so the server thread needs none of
    the test's transaction. Yields the endpoint template the client uses.
    """
    server = ThreadedWSGIServer(("127.0.0.1", 0), _QuietHandler, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/sandbox/aliyun/{{product}}"
    with override_settings(ALIBABA_CLOUD_ENDPOINT=endpoint):
        yield endpoint
    server.shutdown()
    server.server_close()


class Scripted:
    """Answers queued (status, body, delay) in order, then `default`; records every request it received.

    A body of Scripted.CLOSE closes the connection without an answer.
    """

    CLOSE = object()

    def __init__(self):
        self.answers: list[tuple[int, object, float]] = []
        self.default: tuple[int, object, float] = (200, {"RequestId": "R"}, 0)
        self.requests: list[dict] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def handler(self):
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                script.requests.append({
                    "method": self.command, "path": parts.path, "query": dict(parse_qsl(parts.query)),
                    "form": dict(parse_qsl(body.decode())), "headers": dict(self.headers), "raw": body,
                })
                with script._lock:
                    status, payload, delay = script.answers.pop(0) if script.answers else script.default
                    script.in_flight += 1
                    script.most_in_flight = max(script.most_in_flight, script.in_flight)
                try:
                    time.sleep(delay)
                finally:
                    with script._lock:
                        script.in_flight -= 1
                if payload is Scripted.CLOSE:
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _answer

        return Handler


@pytest.fixture
def upstream():
    """A scripted Alibaba Cloud endpoint on a loopback port (answers queued in `.answers`)."""
    script = Scripted()
    server = ThreadingHTTPServer(("127.0.0.1", 0), script.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/{{product}}"
    with override_settings(ALIBABA_CLOUD_ENDPOINT=endpoint, ALIBABA_CLOUD_READ_TIMEOUT=0.5):
        yield script
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_key(db):
    """Create an API key; returns (row, secret)."""
    from payments.services import api_key_create

    def make(label="agent", **options):
        created = api_key_create(label=label, **options)
        return created.api_key, created.secret

    return make


@pytest.fixture
def paid_token(db):
    """A paid payment for a service, bought from `key`'s balance (topped up as needed); returns its token."""
    from catalog.models import Service
    from payments.credentials import payment_token
    from payments.services import api_key_top_up, payment_create, payment_pay_from_balance

    def buy(service_id, key, **payment_fields):
        service = Service.objects.get(id=service_id)
        payment = payment_create(service=service, client=key)
        if payment_fields:
            type(payment).objects.filter(pk=payment.pk).update(**payment_fields)
            payment.refresh_from_db()
        api_key_top_up(api_key=key, amount_cents=payment.amount_cents)
        payment = payment_pay_from_balance(payment=payment, api_key=key)
        return payment, payment_token(payment.id)

    return buy


@pytest.fixture
def committed_db(transactional_db):
    """Rows committed for real, so other connections (threads, processes) see them.

    The flush after such a test empties every table, so the reference catalog
    is imported again when missing. pytest-django runs transactional tests after
    all the others (on each xdist worker too), so no rolled-back test misses it.
    """
    from catalog.models import Service

    if not Service.objects.exists():
        catalog_import(paths=[REFERENCE_CATALOG])


@pytest.fixture
def postgresql_only():
    from django.conf import settings

    if "postgresql" not in settings.DATABASES["default"]["ENGINE"]:
        pytest.skip("races need real concurrent connections: run with DATABASE_URL=postgres://... (CI does)")


def run_concurrently(function, count: int) -> list:
    """`function(i)` in `count` threads released together; each thread has its own database connection."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    barrier = threading.Barrier(count)

    def run(index):
        try:
            barrier.wait(timeout=30)
            return function(index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


class X402Payer:
    """A throwaway wallet that pays 402s the way agents do: through the official x402 client."""

    def __init__(self):
        from eth_account import Account
        from x402 import x402ClientSync
        from x402.mechanisms.evm.exact import ExactEvmClientScheme

        self.account = Account.create()
        self.address = self.account.address
        self.client = x402ClientSync().register("eip155:*", ExactEvmClientScheme(signer=self.account))

    def payload(self, payment_required_header: str) -> dict:
        """The PaymentPayload (wire JSON) the official client makes for a PAYMENT-REQUIRED header."""
        from x402.http.utils import decode_payment_required_header

        required = decode_payment_required_header(payment_required_header)
        payload = self.client.create_payment_payload(required, resource=required.resource)
        return payload.model_dump(mode="json", by_alias=True, exclude_none=True)

    def header(self, payment_required_header: str) -> str:
        return encode_header(self.payload(payment_required_header))

    def sign(self, payload: dict, *, chain_id: int = 84532, name: str = "USDC", signer=None) -> dict:
        """Sign payload's (possibly edited) authorization again, as `signer` (default: this wallet)."""
        from eth_account import Account

        authorization = payload["payload"]["authorization"]
        signed = Account.sign_typed_data(
            (signer or self.account).key,
            domain_data={"name": name, "version": "2", "chainId": chain_id,
                         "verifyingContract": payload["accepted"]["asset"]},
            message_types={"TransferWithAuthorization": [
                {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]},
            message_data={**authorization, "value": int(authorization["value"]),
                          "validAfter": int(authorization["validAfter"]),
                          "validBefore": int(authorization["validBefore"]),
                          "nonce": bytes.fromhex(authorization["nonce"][2:])},
        )
        payload["payload"]["signature"] = "0x" + signed.signature.hex().removeprefix("0x")
        return payload


def encode_header(document: dict) -> str:
    import base64

    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.fixture
def x402_payer():
    return X402Payer()


@pytest.fixture
def celery_workers(committed_db, upstream_emulator, tmp_path):
    """Real Celery worker processes on a Redis broker of their own, sharing the test's (committed) database.

    `celery_workers.start(**environment)` starts one, with extra settings; a
    test may kill it and start another. Every worker is killed at the end.
    Only on PostgreSQL and Redis: see tests.celery_workers.why_not_runnable.
    """
    from tests.celery_workers import CeleryWorkers

    with CeleryWorkers(tmp_path, upstream_endpoint=upstream_emulator) as workers:
        yield workers

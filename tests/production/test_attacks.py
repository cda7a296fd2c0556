"""Attacks on Server402 (issue 9, point 5): one class per attack, each with what stops it.

Where an attack is already tested elsewhere it is not repeated here; this index
names every test that shows an attack fails, here or elsewhere (path::name).

1. Replayed and concurrent duplicate payments
   - tests/payments/test_x402_payments.py::test_an_authorization_replayed_pays_for_nothing_more
   - tests/payments/test_races.py::test_one_x402_authorization_sent_twenty_times_at_once_pays_for_one_call
   - tests/payments/test_races.py::test_fifty_concurrent_calls_with_a_ten_call_token_give_exactly_ten_results
   - tests/payments/test_races.py::test_one_payment_paid_twenty_times_at_once_is_debited_once
   - tests/payments/test_races.py::test_a_balance_pays_for_as_many_payments_as_it_covers_however_many_race
   - tests/payments/test_races.py::test_a_legacy_payment_paid_by_twenty_authorizations_at_once_settles_one
   - tests/payments/test_x402_payments.py::test_a_legacy_payment_is_paid_once
   - here, TestDuplicatePayments: the last call of a token raced, a payment raced by its balance and x402 at once,
     one authorization raced over HTTP and MCP at once, an authorization replayed after its call failed unsettled.
2. A token of another client or another service
   - tests/payments/test_tool_calls.py::test_a_token_of_another_client_is_refused
   - tests/payments/test_tool_calls.py::test_a_token_of_another_service_is_refused
   - tests/server402/test_mcp_endpoint.py::test_a_token_pays_and_a_token_of_another_tool_does_not
   - tests/payments/test_x402_payments.py::test_an_authorization_for_one_service_is_refused_by_another
   - here, TestForeignTokens: another client's token over MCP, and as payment for a job.
3. Payment ids guessed or enumerated: here, TestPaymentIdEnumeration (another client's payment or job answers as
   an unknown id does, ids and secrets are 128+ random bits, no public endpoint lists them);
   tests/payments/test_payments_api.py::test_only_the_bound_client_reads_the_token,
   tests/payments/test_payments_api.py::test_another_clients_payment_cannot_be_paid_by_me.
4. API keys timed for prefix guessing: here, TestApiKeyPrefixGuessing (the same work for every wrong key);
   tests/payments/test_tool_calls.py::test_an_unknown_key_is_401, ::test_a_wrong_secret_for_a_real_prefix_is_401.
5. Oversized bodies and headers
   - tests/payments/test_tool_calls.py::test_a_two_megabyte_body_is_400_and_charges_nothing
   - tests/server402/test_mcp_endpoint.py::test_it_refuses_a_request_over_its_size_limit
   - tests/payments/test_x402_payments.py::test_an_oversized_payment_signature_is_refused_before_it_is_read
   - here, TestOversizedRequests: chunked bodies without Content-Length, huge credential headers, and gunicorn's own
     limits on header size, header count and request line (against a real gunicorn).
6. Slow clients: here, TestSlowClients (a real gunicorn: stalled connections are cut off, others are served).
7. An anonymous flood of 402 challenges: here, TestAnonymousFlood (429 past ANONYMOUS_RATE_LIMIT_PER_MINUTE per
   client address, no row per challenge);
   tests/payments/test_tool_calls.py::test_no_payment_gets_the_seed_402_body_and_writes_nothing.
8. SSRF through a URL Server402 fetches: here, TestServerSideRequestForgery (two outbound clients, both to configured
   URLs, neither follows a redirect; image URLs are parameters, and those naming this side of the internet are
   refused); tests/payments/test_facilitators.py::test_a_redirect_is_not_followed.
9. CSRF and XSS on the dashboard: here, TestDashboardCsrfAndXss (every dashboard POST, every page and public document);
   tests/server402/test_dashboard_access.py::test_a_write_without_the_csrf_token_is_refused,
   tests/catalog/test_service_pages.py::test_a_name_with_markup_renders_as_text_in_html,
   tests/jobs/test_dashboard_jobs.py::test_a_script_in_a_jobs_error_or_arguments_is_rendered_as_text.
10. A key revoked while a call is in flight: here, TestKeyRevokedInFlight. A call authorized before the revocation
   finishes and is recorded once against the key; the next call is 401; a job queued before the revocation and not
   yet started by a worker fails uncharged (401) when a worker takes it; one already running finishes.
"""

import hmac
import io
import ipaddress
import json
import random
import re
import secrets
import socket
import threading
import time
import types
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from django.apps import apps
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import URLResolver, get_resolver
from django.utils import timezone

from catalog import aliyun_client
from catalog.input_validation import input_problems
from catalog.models import PricingPolicy, Service
from health.models import HealthRun, ServiceStatsHour
from jobs.models import Job
from payments import credentials
from payments.credentials import payment_token
from payments.models import ApiKey, ApiKeyEvent, Payment, ToolCall, X402Authorization
from payments.pipeline import paid_call_run, paid_job_run
from payments.selectors import KEY_INVALID, ApiKeyRejected, api_key_authenticate
from payments.services import api_key_create, api_key_revoke, payment_create
from server402.client_addresses import client_address
from tests.conftest import encode_header, run_concurrently

IMAGE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/facebody/DetectCelebrity/1.jpg"
URL = "/api/tools/celebrity-recognition"
BODY = {"ImageURL": IMAGE}
MCP_VERSION = "2025-11-25"


def _post(client, url=URL, body=None, *, token=None, key=None, **extra):
    if token:
        extra["HTTP_X_PAYMENT_TOKEN"] = token
    if key:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client.generic("POST", url, json.dumps(BODY if body is None else body), content_type="application/json",
                          **extra)


def _mcp_call(client, name, arguments, *, meta=None, headers=None, **extra):
    params = {"name": name, "arguments": arguments, **({"_meta": meta} if meta else {})}
    response = client.post("/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}),
                           content_type="application/json",
                           headers={"MCP-Protocol-Version": MCP_VERSION, **(headers or {})}, **extra)
    assert response.status_code == 200, response.content
    return response.json()["result"]


def _money(payment: Payment, key: ApiKey):
    """What a refusal must leave as it was: the payment's calls, the key's balance, the calls recorded."""
    payment.refresh_from_db()
    key.refresh_from_db()
    return payment.used_calls, key.balance_cents, ToolCall.objects.count(), Job.objects.count()


def _unique_address() -> str:
    # The cache outlives tests (Redis, or the file cache under var/): each test counts from an address of its own.
    return str(ipaddress.IPv4Address(random.randint(0x0B000000, 0x0BFFFFFF)))


def _clear_of_the_minute_turn():
    """Rate-limit windows are calendar minutes: a flood counted across the turn would be counted twice."""
    second = timezone.now().second
    if second >= 50:
        time.sleep(61 - second)


def _rows() -> dict[str, int]:
    return {model._meta.label: model.objects.count() for model in apps.get_models()}


class _Recorder:
    """A loopback HTTP server that counts what reaches it and answers every request with `answer`."""

    def __init__(self, answer=(200, {}, b"{}")):
        self.hits: list[str] = []
        self.answer = answer
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.hits.append(self.path)
                status, headers, body = recorder.answer
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                    **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _reply

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    """Two loopback servers: `.redirecting` answers every request 302 to `.target`, which counts its hits."""
    target = _Recorder()
    redirecting = _Recorder(answer=(302, {"Location": f"{target.url}/stolen"}, b""))
    yield types.SimpleNamespace(target=target, redirecting=redirecting)
    redirecting.close()
    target.close()


@pytest.fixture
def buyer(make_key, paid_token):
    """A key with a paid one-call token for celebrity-recognition."""
    key, secret = make_key()
    payment, token = paid_token("celebrity-recognition", key)
    return types.SimpleNamespace(key=key, secret=secret, payment=payment, token=token)


# --- 1. Replayed and concurrent duplicate payments ------------------------------------------------


@pytest.mark.usefixtures("postgresql_only", "committed_db")
class TestDuplicatePayments:
    """The database decides every race: conditional UPDATEs for calls and balances, a unique (payer, nonce) row
    for x402 authorizations, the payment row locked while it is paid."""

    def test_a_token_raced_for_its_last_call_serves_it_once(self, upstream_emulator):
        created = api_key_create(label="racer")
        payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
        Payment.objects.filter(pk=payment.pk).update(status="paid", method="balance", max_calls=10, used_calls=9)
        token = payment_token(payment.id)

        def call(_):
            response = _post(Client(), token=token, key=created.secret)
            return response.status_code, response.json().get("error")

        outcomes = Counter(run_concurrently(call, 20))

        assert outcomes == {(200, None): 1, (402, "payment token has no remaining calls"): 19}
        payment.refresh_from_db()
        assert payment.used_calls == 10
        assert list(ToolCall.objects.values_list("outcome", flat=True)) == ["succeeded"]

    def test_a_payment_raced_by_its_balance_and_by_x402_is_paid_once_by_one_of_them(self, x402_payer):
        created = api_key_create(label="buyer", balance_cents=1000)
        payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
        url = f"/api/payments/{payment.id}/pay"
        challenge = Client().post(url, {"method": "x402"}, content_type="application/json",
                                  HTTP_X_API_KEY=created.secret)
        assert challenge.status_code == 402
        signatures = [x402_payer.header(challenge["PAYMENT-REQUIRED"]) for _ in range(10)]

        def pay(index):
            if index % 2:
                return "balance", Client().post(url, {}, content_type="application/json",
                                                HTTP_X_API_KEY=created.secret).status_code
            return "x402", Client().post(url, {}, content_type="application/json", HTTP_X_API_KEY=created.secret,
                                         HTTP_PAYMENT_SIGNATURE=signatures[index // 2]).status_code

        outcomes = Counter(run_concurrently(pay, 20))

        winners = [method for (method, status), count in outcomes.items() if status == 200 for _ in range(count)]
        assert len(winners) == 1 and sum(outcomes.values()) == 20
        assert {status for _, status in outcomes} <= {200, 409}
        payment.refresh_from_db()
        balance = ApiKey.objects.get(pk=created.api_key.pk).balance_cents
        settled = X402Authorization.objects.filter(status="settled").count()
        assert (payment.status, payment.method) == ("paid", winners[0])
        # Charged once: either the balance moved, or one authorization settled, never both.
        assert (balance, settled) == ((980, 0) if winners[0] == "balance" else (1000, 1))
        assert not X402Authorization.objects.filter(status__in=["reserved", "unknown"]).exists()

    def test_one_authorization_sent_over_http_and_mcp_at_once_pays_for_one_call(self, upstream_emulator, x402_payer):
        payload = x402_payer.payload(_post(Client())["PAYMENT-REQUIRED"])
        # One authorization, carried the way each transport carries it.
        header = encode_header(payload)

        def call(index):
            if index % 2:
                response = _post(Client(), HTTP_PAYMENT_SIGNATURE=header)
                return "http", response.status_code == 200, response.json().get("invalidReason")
            answer = _mcp_call(Client(), "celebrity_recognition", BODY, meta={"x402/payment": payload})
            return "mcp", not answer["isError"], answer["structuredContent"].get("invalidReason")

        outcomes = run_concurrently(call, 20)

        assert sum(paid for _, paid, _ in outcomes) == 1
        # Every other attempt, over either transport, reached the ledger and found the nonce spent.
        assert Counter((transport, reason) for transport, paid, reason in outcomes if not paid) in (
            {("http", "invalid_exact_evm_nonce_already_used"): 9, ("mcp", "invalid_exact_evm_nonce_already_used"): 10},
            {("http", "invalid_exact_evm_nonce_already_used"): 10, ("mcp", "invalid_exact_evm_nonce_already_used"): 9})
        assert X402Authorization.objects.get().status == "settled"
        assert list(ToolCall.objects.values_list("outcome", flat=True)) == ["succeeded"]
        assert Payment.objects.filter(method="x402").count() == 1


@pytest.mark.django_db
def test_an_authorization_replayed_after_its_call_failed_unsettled_is_still_refused(api, upstream_emulator,
                                                                                   x402_payer):
    """Attack 1: an unsettled authorization keeps its ledger row, so the payer cannot buy a second attempt with it
    and nothing is charged either time."""
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)
    signature = x402_payer.header(_post(api)["PAYMENT-REQUIRED"])
    failed = _post(api, body={"ImageURL": "https://sandbox.invalid/error/InternalError"},
                   HTTP_PAYMENT_SIGNATURE=signature)
    assert failed.status_code == 502 and failed.json()["charged"] is False

    replay = _post(api, HTTP_PAYMENT_SIGNATURE=signature)

    assert replay.status_code == 402 and replay.json()["invalidReason"] == "invalid_exact_evm_nonce_already_used"
    assert list(X402Authorization.objects.values_list("status", flat=True)) == ["unsettled"]
    assert list(ToolCall.objects.values_list("outcome", "amount_cents")) == [("upstream_error", 0)]


# --- 2. A token of another client or another service -----------------------------------------------


@pytest.mark.django_db
class TestForeignTokens:
    """A token is bound to its service and (by default) to the key that bought it: HTTP is tested in
    tests/payments/test_tool_calls.py; here the other two ways in, MCP and a job."""

    def test_over_mcp_a_token_of_another_client_is_refused_and_charges_nothing(self, client, buyer, make_key):
        _, other = make_key("other")
        before = _money(buyer.payment, buyer.key)

        for headers in ({"Authorization": f"Bearer {other}"}, {}):
            answer = _mcp_call(client, "celebrity_recognition", {**BODY, "paymentToken": buyer.token},
                               headers=headers)
            assert answer["isError"] and answer["structuredContent"]["status"] == "payment_required"
            assert answer["structuredContent"]["error"] == "payment token belongs to another client"
        assert _money(buyer.payment, buyer.key) == before

    @pytest.mark.parametrize("url", ["/api/tools/celebrity-recognition", "/api/tools/scene-recognition"])
    def test_a_job_cannot_be_paid_with_a_token_of_another_client_or_service(self, api, buyer, make_key, url):
        _, other = make_key("other")
        key = buyer.secret if "scene" in url else other
        before = _money(buyer.payment, buyer.key)

        response = _post(api, url, body={"ImageURL": IMAGE}, token=buyer.token, key=key, HTTP_PREFER="respond-async")

        assert response.status_code == 402
        assert response.json()["error"] == ("payment token is for another service" if "scene" in url
                                            else "payment token belongs to another client")
        assert _money(buyer.payment, buyer.key) == before


# --- 3. Payment ids guessed or enumerated ----------------------------------------------------------


def _shape(response) -> tuple[int, object]:
    return response.status_code, response.json()


@pytest.mark.django_db
class TestPaymentIdEnumeration:
    """Another client's payment or job is answered word for word as an id that never existed, the ids are 128
    random bits from the operating system's generator, and no public endpoint lists them."""

    def test_another_keys_payment_answers_exactly_like_a_nonexistent_one(self, api, make_key):
        mine, my_secret = make_key("mine", balance_cents=100)
        _, their_secret = make_key("theirs", balance_cents=100)
        theirs = api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json",
                          HTTP_X_API_KEY=their_secret).json()["paymentId"]
        unknown = credentials.payment_id_generate()

        def asked(payment_id, headers):
            return [api.get(f"/api/payments/{payment_id}", **headers),
                    api.post(f"/api/payments/{payment_id}/pay", {"method": "x402"}, format="json", **headers)]

        for headers in ({"HTTP_X_API_KEY": my_secret}, {}):
            for existing, missing in zip(asked(theirs, headers), asked(unknown, headers), strict=True):
                assert _shape(existing) == _shape(missing) == (404, {"error": "payment not found"}), headers
        paying = api.post(f"/api/payments/{theirs}/pay", {"method": "balance"}, format="json",
                          HTTP_X_API_KEY=my_secret)
        assert _shape(paying) == (404, {"error": "payment not found"})
        mine.refresh_from_db()
        assert mine.balance_cents == 100 and Payment.objects.get(pk=theirs).status == "pending"

    def test_another_keys_job_answers_exactly_like_a_nonexistent_one(self, api, buyer, make_key):
        _, other = make_key("other")
        accepted = _post(api, token=buyer.token, key=buyer.secret, HTTP_PREFER="respond-async")
        assert accepted.status_code == 202
        theirs, unknown = accepted.json()["jobId"], credentials.job_id_generate()

        for headers in ({"HTTP_X_API_KEY": other}, {}, {"HTTP_X_JOB_SECRET": "s402job_" + secrets.token_urlsafe(32)}):
            existing, missing = (api.get(f"/api/jobs/{job_id}", **headers) for job_id in (theirs, unknown))
            assert existing.status_code == missing.status_code == 404
            assert json.dumps(existing.json()).replace(theirs, "ID") == \
                json.dumps(missing.json()).replace(unknown, "ID")
            listed = api.get(f"/api/jobs?ids={theirs},{unknown}", **headers).json()["jobs"]
            assert json.dumps(listed[0]).replace(theirs, "ID") == json.dumps(listed[1]).replace(unknown, "ID")

    def test_ids_and_secrets_are_drawn_from_the_system_generator_with_at_least_128_bits(self, monkeypatch):
        drawn = []
        real_hex, real_urlsafe = secrets.token_hex, secrets.token_urlsafe
        monkeypatch.setattr(credentials.secrets, "token_hex", lambda n: drawn.append(("hex", n)) or real_hex(n))
        monkeypatch.setattr(credentials.secrets, "token_urlsafe",
                            lambda n: drawn.append(("urlsafe", n)) or real_urlsafe(n))

        payment_ids = [credentials.payment_id_generate() for _ in range(2000)]
        job_ids = [credentials.job_id_generate() for _ in range(2000)]
        credentials.job_secret_generate()
        credentials.api_key_generate()

        # secrets is the operating system's CSPRNG; 16 bytes are 128 bits, 32 bytes 256.
        assert drawn[:4000] == [("hex", 16)] * 4000
        assert drawn[4000:] == [("urlsafe", 32), ("hex", 6), ("urlsafe", 32)]
        for ids, prefix in ((payment_ids, "pay_"), (job_ids, "job_")):
            assert len(set(ids)) == len(ids)
            assert all(re.fullmatch(rf"{prefix}[0-9a-f]{{32}}", one) for one in ids)
            # Every one of the 32 hex digits varies over all 16 values: no position is fixed or counted up.
            # (A digit missing by chance from 2000 draws: (15/16)**2000, about 1e-56.)
            for position in range(len(prefix), len(prefix) + 32):
                assert len({one[position] for one in ids}) == 16, position

    def test_no_public_endpoint_lists_payments_or_jobs(self, api, client, buyer, make_key):
        anonymous = api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json").json()
        job = _post(api, token=buyer.token, key=buyer.secret, HTTP_PREFER="respond-async").json()
        secrets_shown = [buyer.payment.id, anonymous["paymentId"], job["jobId"], buyer.token, anonymous["token"]]
        pages = [route for route in _routes() if not route.startswith(("dashboard/", "admin/", "sandbox/"))
                 and "<" not in route]
        pages += ["services/celebrity-recognition", "services/celebrity-recognition.md", "api/services",
                  "api/services/celebrity-recognition", "api/catalog/search?q=celebrity"]
        assert {"api/payments", "api/jobs", "llms.txt", "openapi.json", ".well-known/x402"} <= set(pages)

        for page in pages:
            for headers in ({}, {"HTTP_X_API_KEY": buyer.secret}):
                body = api.get(f"/{page}", **headers).content.decode(errors="replace")
                assert not [shown for shown in secrets_shown if shown in body], page
        assert api.get("/api/payments").status_code == 405
        assert api.get("/api/jobs", HTTP_X_API_KEY=buyer.secret).status_code == 400
        tools = client.post("/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                            content_type="application/json", headers={"MCP-Protocol-Version": MCP_VERSION})
        assert not [shown for shown in secrets_shown if shown in tools.content.decode()]


def _routes() -> list[str]:
    """Every URL pattern of the site as a route string, e.g. "dashboard/keys/<int:key_id>/"."""

    def walk(patterns, prefix):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    return list(walk(get_resolver().url_patterns, ""))


# --- 4. API keys timed for prefix guessing ---------------------------------------------------------


@pytest.mark.django_db
class TestApiKeyPrefixGuessing:
    """Not a stopwatch: the work itself is counted, one branch at a time.

    A key is `s402_<12 hex prefix>_<secret>`; the prefix finds the row, the
    secret's SHA-256 is compared in constant time. An unknown prefix and a known
    prefix with a wrong secret do exactly the same work (one indexed query, one
    hash, one compare_digest, against a dummy hash when the row is missing) and
    get the same sentence, so timing cannot tell a real prefix from a made-up one.

    A malformed key skips the query. That difference leaks nothing secret: the
    format is public (README, every key the dashboard shows), so "this is not a
    key" is what anyone can see by reading it; it still costs the hash and the
    compare, and gets the same 401 sentence.
    """

    def _work(self, monkeypatch, presented: str):
        hashed, compared = [], []
        real_hash = credentials.api_key_hash
        monkeypatch.setattr(credentials, "api_key_hash", lambda key: hashed.append(key) or real_hash(key))
        monkeypatch.setattr(credentials, "hmac", types.SimpleNamespace(
            compare_digest=lambda a, b: compared.append((a, b)) or hmac.compare_digest(a, b)))
        with CaptureQueriesContext(connection) as queries:
            with pytest.raises(ApiKeyRejected) as rejected:
                api_key_authenticate(presented)
        monkeypatch.undo()
        sql = [re.sub(r"'[^']*'|%s", "?", query["sql"]) for query in queries.captured_queries]
        return len(hashed), len(compared), sql, rejected.value.reason

    def test_an_unknown_prefix_and_a_wrong_secret_cost_the_same_work_and_get_the_same_answer(self, monkeypatch,
                                                                                            make_key):
        key, secret = make_key()
        wrong_secret = f"s402_{key.prefix}_{secrets.token_urlsafe(32)}"
        unknown_prefix = f"s402_{secrets.token_hex(6)}_{secret.split('_', 2)[2]}"

        wrong = self._work(monkeypatch, wrong_secret)
        unknown = self._work(monkeypatch, unknown_prefix)

        assert wrong == unknown
        hashes, compares, sql, reason = wrong
        assert (hashes, compares, len(sql), reason) == (1, 1, 1, KEY_INVALID)

    @pytest.mark.parametrize("malformed", ["not-a-key", "s402_short_secret", "s402_" + "0" * 12, "x" * 5000])
    def test_a_malformed_key_costs_the_hash_and_the_compare_and_only_skips_the_query(self, monkeypatch, make_key,
                                                                                     malformed):
        key, _ = make_key()
        hashes, compares, sql, reason = self._work(monkeypatch, malformed)
        assert (hashes, compares, sql, reason) == (1, 1, [], KEY_INVALID)

    def test_over_http_every_wrong_key_gets_the_same_answer(self, api, make_key):
        key, secret = make_key()
        answers = [_shape(_post(api, key=presented)) for presented in (
            "not-a-key", f"s402_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}",
            f"s402_{key.prefix}_{secrets.token_urlsafe(32)}")]
        assert answers == [(401, {"error": KEY_INVALID})] * 3


# --- 5. Oversized bodies and headers ---------------------------------------------------------------


def _chunked(client, url, body: bytes, *, terminated=True, **extra):
    """A POST whose body comes without Content-Length, as a server hands on a Transfer-Encoding: chunked body."""
    stream = io.BytesIO(body)
    environ = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input": stream}
    if terminated:
        environ["wsgi.input_terminated"] = True
    response = client.generic("POST", url, body, content_type="application/json", **environ, **extra)
    return response, stream


@pytest.mark.django_db
class TestOversizedRequests:
    """A body over its limit is refused before it is read past the limit, and before any other work: 400 on
    /api/tools (SPEC: oversized bodies are 400 there), 413 on /mcp. Huge credentials are refused with a clear 4xx;
    nothing is charged. gunicorn's own limits are tested against a real gunicorn (TestGunicornLimits)."""

    def test_a_chunked_tool_call_body_over_the_limit_is_refused_having_read_no_more_than_the_limit(self, api,
                                                                                                  buyer):
        before = _money(buyer.payment, buyer.key)
        big = json.dumps({"ImageURL": IMAGE, "pad": "x" * 3_000_000}).encode()

        response, stream = _chunked(api, URL, big, HTTP_X_PAYMENT_TOKEN=buyer.token,
                                    HTTP_AUTHORIZATION=f"Bearer {buyer.secret}")

        assert _shape(response) == (400, {"error": "request body is too large: at most 1048576 bytes"})
        assert stream.tell() <= 1_048_577
        assert _money(buyer.payment, buyer.key) == before

    def test_a_chunked_mcp_message_over_the_limit_is_413(self, client, buyer):
        message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "celebrity_recognition", "arguments": {**BODY, "paymentToken": buyer.token, "pad": "x" * 400_000}}}
        before = _money(buyer.payment, buyer.key)

        response, stream = _chunked(client, "/mcp", json.dumps(message).encode(),
                                    HTTP_MCP_PROTOCOL_VERSION=MCP_VERSION)

        assert response.status_code == 413
        assert response.json()["error"]["message"] == "request body is too large: at most 262144 bytes"
        assert stream.tell() <= 262_145
        assert _money(buyer.payment, buyer.key) == before

    def test_a_small_chunked_body_is_read_like_any_other(self, api, upstream_emulator, buyer):
        response, _ = _chunked(api, URL, json.dumps(BODY).encode(), HTTP_X_PAYMENT_TOKEN=buyer.token,
                               HTTP_AUTHORIZATION=f"Bearer {buyer.secret}")

        assert response.status_code == 200, response.json()
        assert ToolCall.objects.get().outcome == "succeeded"

    def test_a_chunked_body_the_server_does_not_end_is_refused_unread(self, api, buyer):
        before = _money(buyer.payment, buyer.key)

        response, stream = _chunked(api, URL, json.dumps(BODY).encode(), terminated=False,
                                    HTTP_X_PAYMENT_TOKEN=buyer.token, HTTP_AUTHORIZATION=f"Bearer {buyer.secret}")

        assert response.status_code == 400 and "send Content-Length" in response.json()["error"]
        assert stream.tell() == 0
        assert _money(buyer.payment, buyer.key) == before

    @pytest.mark.parametrize(("header", "status", "error"), [
        ("HTTP_X_PAYMENT_TOKEN", 402, "payment token is not valid"),
        ("HTTP_AUTHORIZATION", 401, KEY_INVALID),
        ("HTTP_X_API_KEY", 401, KEY_INVALID),
        ("HTTP_PAYMENT_SIGNATURE", 400, None),
    ])
    def test_a_huge_credential_header_is_a_clear_4xx_and_charges_nothing(self, api, buyer, header, status, error):
        huge = ("Bearer " if header == "HTTP_AUTHORIZATION" else "") + "A" * 1_000_000
        credentials_sent = {"HTTP_X_PAYMENT_TOKEN": buyer.token, "HTTP_AUTHORIZATION": f"Bearer {buyer.secret}"}
        if header == "HTTP_X_API_KEY":
            del credentials_sent["HTTP_AUTHORIZATION"]
        before = _money(buyer.payment, buyer.key)

        response = _post(api, **{**credentials_sent, header: huge})

        assert response.status_code == status
        assert response.json()["error"] == error if error else "too long" in response.json()["error"]
        assert _money(buyer.payment, buyer.key) == before
        assert not X402Authorization.objects.exists()


def _paid_key(label: str, max_calls: int = 1):
    """A committed key with a paid token of its own, for servers in other processes: (key, secret, payment, token)."""
    created = api_key_create(label=label)
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
    Payment.objects.filter(pk=payment.pk).update(status="paid", method="balance", max_calls=max_calls)
    return created.api_key, created.secret, payment, payment_token(payment.id)


def _untouched_by_servers(payment: Payment) -> None:
    payment.refresh_from_db()
    assert payment.used_calls == 0
    assert not ToolCall.objects.exists() and not X402Authorization.objects.exists() and not Job.objects.exists()


@pytest.mark.slow
class TestGunicornLimits:
    """What no Django view ever sees: gunicorn (./gunicorn.conf.py) refuses an oversized header line (431), too
    many headers (431) and a long request line (414) while parsing, before the application is called; a chunked
    body is handed on unsized, and bounded here (server402/request_bodies.py)."""

    @pytest.mark.parametrize("header", ["PAYMENT-SIGNATURE", "X-Payment-Token", "Authorization", "X-API-Key"])
    def test_a_header_past_the_field_limit_is_refused_by_gunicorn_and_charges_nothing(self, gunicorn_server, header):
        _, secret, payment, token = _paid_key("big header")
        sent = {"X-Payment-Token": token, "Authorization": f"Bearer {secret}"}
        sent[header] = ("Bearer " if header == "Authorization" else "") + "A" * 9000

        response = httpx.post(gunicorn_server.url + URL, json=BODY, headers=sent, timeout=30)

        assert response.status_code == 431, response.text
        _untouched_by_servers(payment)

    def test_too_many_headers_and_a_long_request_line_are_refused_by_gunicorn(self, gunicorn_server):
        _, secret, payment, token = _paid_key("many headers")
        credentials_sent = {"X-Payment-Token": token, "Authorization": f"Bearer {secret}"}

        crowded = httpx.post(gunicorn_server.url + URL, json=BODY, timeout=30,
                             headers={**credentials_sent, **{f"X-Filler-{n}": "x" for n in range(100)}})
        long_line = httpx.post(f"{gunicorn_server.url}{URL}?{'q=' + 'x' * 5000}", json=BODY, timeout=30,
                               headers=credentials_sent)

        assert (crowded.status_code, long_line.status_code) == (431, 414)
        _untouched_by_servers(payment)

    def test_a_chunked_body_is_bounded_under_gunicorn_and_a_small_one_is_served(self, gunicorn_server):
        _, secret, payment, token = _paid_key("chunked", max_calls=2)
        credentials_sent = {"X-Payment-Token": token, "Authorization": f"Bearer {secret}",
                            "Content-Type": "application/json"}
        big = json.dumps({"ImageURL": IMAGE, "pad": "x" * 3_000_000}).encode()

        def chunks(data: bytes):
            for start in range(0, len(data), 65_536):
                yield data[start:start + 65_536]

        refused = httpx.post(gunicorn_server.url + URL, content=chunks(big), headers=credentials_sent, timeout=60)
        assert refused.request.headers.get("Transfer-Encoding") == "chunked"
        assert _shape(refused) == (400, {"error": "request body is too large: at most 1048576 bytes"})
        payment.refresh_from_db()
        assert payment.used_calls == 0 and not ToolCall.objects.exists()

        served = httpx.post(gunicorn_server.url + URL, content=chunks(json.dumps(BODY).encode()),
                            headers=credentials_sent, timeout=60)
        assert served.status_code == 200, served.text
        assert list(ToolCall.objects.values_list("outcome", flat=True)) == ["succeeded"]


# --- 6. Slow clients ------------------------------------------------------------------------------

# Far above anything a served request takes here (milliseconds); only a server that never answers misses it.
DEADLINE_SECONDS = 60


def _stalled(url: str, partial: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)), timeout=DEADLINE_SECONDS)
    stalled.sendall(partial)
    return stalled


def _closed_by_the_server(stalled: socket.socket) -> bool:
    """Whether the server ends the connection (with or without an answer first) before the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline:
            if not stalled.recv(65_536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


@pytest.mark.slow
class TestSlowClients:
    """A client that sends part of a request and stops holds one of gunicorn's threads only until the socket's read
    timeout (WEB_CLIENT_TIMEOUT, gunicorn.conf.py), then is disconnected: a crowd of them delays a normal client by
    a few timeouts at most and never shuts it out. Here 2 threads face 12 stalled connections."""

    @pytest.mark.parametrize("partial, logged", [
        (b"POST /api/tools/celebrity-recognition HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty",
         "mid-request; its connection was closed"),
        (b"POST /api/tools/celebrity-recognition HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
         b"Content-Length: 1000\r\n\r\n{\"ImageURL\": ",
         "POST /api/tools/celebrity-recognition 400"),
    ], ids=["in-the-headers", "in-the-body"])
    def test_stalled_clients_are_cut_off_and_a_normal_client_is_still_served(self, gunicorn_servers, partial, logged):
        server = gunicorn_servers.start(WEB_CONCURRENCY=1, WEB_THREADS=2, WEB_CLIENT_TIMEOUT=2)
        _, secret, payment, token = _paid_key("patient")
        stalled = [_stalled(server.url, partial) for _ in range(12)]
        try:
            served = httpx.post(server.url + URL, json=BODY, timeout=DEADLINE_SECONDS,
                                headers={"X-Payment-Token": token, "Authorization": f"Bearer {secret}"})

            assert served.status_code == 200, served.text
            assert all(_closed_by_the_server(one) for one in stalled)
        finally:
            for one in stalled:
                one.close()
        payment.refresh_from_db()
        assert payment.used_calls == 1 and ToolCall.objects.count() == 1
        # One line per stalled client, not a traceback: stalling on purpose must not multiply the log. A body
        # that stops arriving is the app's to refuse (400), headers that stop are gunicorn's to drop.
        assert logged in server.output()
        assert "Traceback" not in server.output()


# --- 7. An anonymous flood of 402 challenges --------------------------------------------------------


@pytest.fixture
def anonymous_limit(settings):
    """ANONYMOUS_RATE_LIMIT_PER_MINUTE at 5 (tests/conftest.py turns it off for every other test)."""
    settings.ANONYMOUS_RATE_LIMIT_PER_MINUTE = 5
    _clear_of_the_minute_turn()
    return 5


@pytest.mark.django_db
class TestAnonymousFlood:
    """A request with neither an API key nor a payment counts against its client address's minute; past
    ANONYMOUS_RATE_LIMIT_PER_MINUTE it gets 429 with Retry-After before anything else is done. Such requests never
    write a row of their own: a 402 adds one to an hourly statistics row, and a 429 not even that."""

    def test_a_flood_of_anonymous_challenges_is_429_past_the_limit_and_writes_no_rows(self, api, anonymous_limit):
        address = _unique_address()
        assert _post(api, REMOTE_ADDR=_unique_address()).status_code == 402  # this hour's statistics row exists
        rows, stats = _rows(), ServiceStatsHour.objects.get(source="challenge")

        answers = [_post(api, REMOTE_ADDR=address) for _ in range(40)]

        assert [answer.status_code for answer in answers] == [402] * 5 + [429] * 35
        refused = answers[-1].json()
        assert refused["error"].startswith("too many requests without an api key from this address: at most 5 per "
                                           "minute")
        assert 1 <= int(answers[-1]["Retry-After"]) <= 60 and refused["retryAfterSeconds"] == int(
            answers[-1]["Retry-After"])
        assert _rows() == rows
        stats.refresh_from_db()
        assert stats.count == 1 + 5

    @pytest.mark.parametrize("junk", [
        {"HTTP_X_PAYMENT_TOKEN": "junk"},
        {"HTTP_X_PAYMENT_TOKEN": "pay_" + "0" * 32 + "." + "0" * 64},  # a token's shape, a wrong MAC
        {"HTTP_PAYMENT_SIGNATURE": "junk"},
        {"HTTP_PAYMENT_SIGNATURE": encode_header({"x402Version": 2})},
        {"HTTP_AUTHORIZATION": "Bearer junk"},
    ], ids=["token", "token-with-a-wrong-mac", "signature", "signature-not-a-payload", "api-key"])
    def test_credentials_that_do_not_parse_count_as_none(self, api, anonymous_limit, junk):
        address = _unique_address()
        assert _post(api, REMOTE_ADDR=_unique_address()).status_code == 402  # this hour's statistics row exists
        rows = _rows()

        answers = [_post(api, REMOTE_ADDR=address, **junk) for _ in range(8)]

        assert [answer.status_code for answer in answers][5:] == [429] * 3
        assert all(answer.status_code in (400, 401, 402) for answer in answers[:5])
        assert _rows() == rows

    def test_each_address_has_its_own_minute(self, api, anonymous_limit):
        flooded = _unique_address()
        for _ in range(6):
            _post(api, REMOTE_ADDR=flooded)
        assert _post(api, REMOTE_ADDR=flooded).status_code == 429
        assert _post(api, REMOTE_ADDR=_unique_address()).status_code == 402

    def test_keyed_and_paying_requests_are_not_counted(self, api, upstream_emulator, anonymous_limit, make_key,
                                                       paid_token):
        address = _unique_address()
        for _ in range(6):
            _post(api, REMOTE_ADDR=address)
        key, secret = make_key()
        _, token = paid_token("celebrity-recognition", key, bind_client=False)

        assert _post(api, key=secret, REMOTE_ADDR=address).status_code == 402  # the key's own limits apply
        assert _post(api, token=token, REMOTE_ADDR=address).status_code == 200  # paid, anonymously

    def test_anonymous_payment_creation_stops_at_the_limit(self, api, anonymous_limit, make_key):
        address = _unique_address()
        statuses = [api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json",
                             REMOTE_ADDR=address) for _ in range(20)]

        assert [answer.status_code for answer in statuses] == [201] * 5 + [429] * 15
        assert statuses[-1]["Retry-After"] and "without an api key" in statuses[-1].json()["error"]
        assert Payment.objects.count() == 5
        _, secret = make_key()
        keyed = api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json", REMOTE_ADDR=address,
                         HTTP_X_API_KEY=secret)
        assert keyed.status_code == 201

    def test_unpaid_anonymous_mcp_calls_count_too(self, client, anonymous_limit):
        address = _unique_address()
        answers = [_mcp_call(client, "celebrity_recognition", BODY, REMOTE_ADDR=address) for _ in range(7)]

        assert [answer["structuredContent"].get("httpStatus", 402) for answer in answers] == [402] * 5 + [429] * 2
        assert answers[-1]["isError"] and answers[-1]["structuredContent"]["retryAfterSeconds"] >= 1

    def test_zero_turns_the_limit_off(self, api, settings):
        settings.ANONYMOUS_RATE_LIMIT_PER_MINUTE = 0
        address = _unique_address()
        assert {_post(api, REMOTE_ADDR=address).status_code for _ in range(30)} == {402}

    @pytest.mark.parametrize(("trusted", "remote", "forwarded", "expected"), [
        (0, "198.51.100.7", "203.0.113.9", "198.51.100.7"),  # nobody trusted: the header is anyone's to write
        (1, "10.0.0.2", "6.6.6.6, 203.0.113.9", "203.0.113.9"),  # one proxy: the entry it appended
        (2, "10.0.0.3", "6.6.6.6, 203.0.113.9, 10.0.0.2", "203.0.113.9"),
        (2, "10.0.0.3", "203.0.113.9", "203.0.113.9"),  # fewer entries than proxies: all written by them
        (1, "10.0.0.2", "", "10.0.0.2"),
        (1, "10.0.0.2", "not-an-address", "10.0.0.2"),
        (0, "2001:db8:1:2:3:4:5:6", "", "2001:db8:1:2::/64"),  # an IPv6 client holds a /64
        (0, "::ffff:198.51.100.7", "", "198.51.100.7"),
    ])
    def test_the_client_address_trusts_only_the_configured_proxies(self, settings, trusted, remote, forwarded,
                                                                    expected):
        settings.TRUSTED_PROXY_COUNT = trusted
        request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
        assert client_address(request) == expected


# --- 8. SSRF through a URL Server402 fetches -------------------------------------------------------

# Every module that may open an outbound connection, and why it is allowed to.
OUTBOUND = {
    "catalog/aliyun_client.py": "the upstream, at ALIBABA_CLOUD_ENDPOINT",
    "payments/facilitators.py": "the x402 facilitator, at X402_FACILITATOR_URL",
    "payments/management/commands/sandbox_pay.py": "a command an operator runs against a server402 they name",
}


@pytest.mark.django_db
class TestServerSideRequestForgery:
    """Server402 fetches from two places only, both configured by the operator, and follows no redirect from
    either. An image URL is a parameter the upstream downloads, never fetched here; one naming this side of the
    internet (loopback, private, link-local, localhost, not http(s)) is refused with a 400 before payment."""

    def test_only_the_upstream_and_facilitator_clients_open_connections(self):
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        found = set()
        for app in ("catalog", "payments", "health", "jobs", "server402"):
            for path in (root / app).rglob("*.py"):
                if re.search(r"^\s*(import|from)\s+(httpx|requests|urllib3|aiohttp|http\.client|urllib\.request)\b",
                             path.read_text(), re.MULTILINE):
                    found.add(str(path.relative_to(root)))
        assert found == set(OUTBOUND)

    def test_the_upstream_client_does_not_follow_a_redirect(self, api, recorder, buyer, settings):
        settings.ALIBABA_CLOUD_ENDPOINT = f"{recorder.redirecting.url}/{{product}}"

        response = _post(api, token=buyer.token, key=buyer.secret)

        assert response.status_code == 502 and response.json()["charged"] is False
        assert len(recorder.redirecting.hits) == 1 and recorder.target.hits == []
        buyer.payment.refresh_from_db()
        assert buyer.payment.used_calls == 0

    def test_the_facilitator_client_does_not_follow_a_redirect(self, api, recorder, upstream_emulator, x402_payer,
                                                               settings):
        settings.X402_FACILITATOR_URL = recorder.redirecting.url

        response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_post(api)["PAYMENT-REQUIRED"]))

        assert response.status_code == 503 and response.json()["charged"] is False
        assert recorder.redirecting.hits == ["/verify"] and recorder.target.hits == []
        assert not X402Authorization.objects.exists() and not ToolCall.objects.exists()

    def test_an_image_url_is_handed_to_the_upstream_and_never_fetched_here(self, api, upstream, recorder, buyer,
                                                                          monkeypatch):
        # The loopback image server is refused as an image URL; let it through to watch who fetches it.
        monkeypatch.setattr("catalog.input_validation.host_not_public", lambda host: None)
        image = f"{recorder.target.url}/face.jpg"

        response = _post(api, body={"ImageURL": image}, token=buyer.token, key=buyer.secret)

        assert response.status_code == 200
        assert upstream.requests[0]["form"]["ImageURL"] == image
        assert recorder.target.hits == []

    @pytest.mark.parametrize(("url", "why"), [
        ("http://127.0.0.1/face.jpg", "127.0.0.1 is a loopback address"),
        ("http://127.0.0.1:8000/sandbox/aliyun/facebody/", "127.0.0.1 is a loopback address"),
        ("http://localhost/face.jpg", "localhost is localhost"),
        ("http://LOCALHOST./face.jpg", "localhost. is localhost"),
        ("http://images.localhost/face.jpg", "images.localhost is localhost"),
        ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/face.jpg", "10.0.0.5 is a private address"),
        ("http://192.168.1.1/face.jpg", "192.168.1.1 is a private address"),
        ("http://172.16.3.4/face.jpg", "172.16.3.4 is a private address"),
        ("http://100.64.0.1/face.jpg", "100.64.0.1 is not a public address"),
        ("http://0.0.0.0/face.jpg", "0.0.0.0 is not a public address"),
        ("http://[::1]/face.jpg", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/face.jpg", "::ffff:127.0.0.1 is a loopback address"),
        ("http://[fe80::1]/face.jpg", "fe80::1 is a link-local address"),
        ("http://[fd00::1]/face.jpg", "fd00::1 is a private address"),
        ("http://2130706433/face.jpg", "2130706433 is a loopback address"),
        ("http://0x7f000001/face.jpg", "0x7f000001 is a loopback address"),
        ("http://0177.0.0.1/face.jpg", "0177.0.0.1 is a loopback address"),
        ("http://127.1/face.jpg", "127.1 is a loopback address"),
        ("https://user:pw@169.254.169.254/", "169.254.169.254 is a link-local address"),
        ("file:///etc/passwd", None),
        ("gopher://127.0.0.1:6379/_FLUSHALL", None),
        ("ftp://example.com/face.jpg", None),
        ("dict://127.0.0.1:11211/stats", None),
    ])
    def test_an_image_url_naming_this_side_of_the_internet_is_400_before_payment(self, api, buyer, url, why):
        before = _money(buyer.payment, buyer.key)

        response = _post(api, body={"ImageURL": url}, token=buyer.token, key=buyer.secret)

        expected = (f"ImageURL must be a public http or https URL: {why}" if why
                    else "ImageURL must be a valid http or https URL")
        assert _shape(response) == (400, {"error": expected, "field": "ImageURL"})
        assert _money(buyer.payment, buyer.key) == before

    def test_a_nested_image_url_is_judged_too(self):
        schemas = [service.input_schema for service in Service.objects.all()]
        nested = next(schema for schema in schemas if "Tasks" in (schema.get("properties") or {}))
        task = {name: "x" for name in nested["properties"]["Tasks"]["items"].get("required", [])}
        arguments = {"Tasks": [{**task, "ImageURL": "http://169.254.169.254/"}]}
        problems = [message for message, _ in input_problems(nested, arguments)]
        assert "Tasks[0].ImageURL must be a public http or https URL: 169.254.169.254 is a link-local address" \
            in problems

    def test_public_urls_the_sandbox_host_and_every_example_request_are_still_accepted(self):
        celebrity = Service.objects.get(id="celebrity-recognition").input_schema
        for url in ("https://example.com/face.jpg", "https://sandbox.invalid/error/InternalError",
                    "http://8.8.8.8/a.jpg", "https://[2606:4700::1111]/a.jpg", "https://1e100.net/a.jpg"):
            assert input_problems(celebrity, {"ImageURL": url}) == [], url
        for service in Service.objects.all():
            assert input_problems(service.input_schema, service.example_request) == [], service.id


# --- 9. CSRF and XSS on the dashboard ---------------------------------------------------------------

SCRIPT = "<script>alert({})</script>"
# What each planted field is called in the pages below; the last two are written by the upstream (an error
# message may echo the caller's input), not by an operator.
PLANTED = {"service name": 1, "service description": 2, "description for models": 3, "key label": 4,
           "policy name": 5, "use case": 6, "health check message": 7, "call error": 8}


def _escaped(number: int) -> str:
    return f"&lt;script&gt;alert({number})&lt;/script&gt;"


@pytest.fixture
def planted(make_key, paid_token, operator):
    """Markup in every field an operator (or the upstream) writes, and rows on every page that shows them."""
    from health.probes import CheckOutcome
    from health.services import health_result_record

    Service.objects.filter(id="celebrity-recognition").update(
        name=SCRIPT.format(1), description=SCRIPT.format(2), description_for_model=SCRIPT.format(3),
        use_cases=[SCRIPT.format(6)], keywords=[SCRIPT.format(6)])
    PricingPolicy.objects.filter(id="aliyun-viapi").update(name=SCRIPT.format(5))
    key, secret = make_key(SCRIPT.format(4))
    payment, token = paid_token("celebrity-recognition", key, max_calls=2)
    accepted = paid_call_run(reference="celebrity-recognition", arguments=BODY, api_key=secret, payment_token=token,
                             respond_async=True)
    run = HealthRun.objects.create(trigger=HealthRun.Trigger.DASHBOARD, service_ids=["celebrity-recognition"],
                                   concurrency=1, started_by=operator)
    health_result_record(service=Service.objects.get(id="celebrity-recognition"), run=run, outcome=CheckOutcome(
        kind="probe", status="unhealthy", message=SCRIPT.format(7), http_status=500, upstream_code="InternalError"))
    ToolCall.objects.filter(pk=Job.objects.get(pk=accepted.body["jobId"]).call_id).update(error=SCRIPT.format(8))
    return {"service_id": "celebrity-recognition", "policy_id": "aliyun-viapi", "key_id": key.pk,
            "payment_id": payment.pk, "job_id": accepted.body["jobId"], "run_id": run.pk}


def _url(route: str, values: dict) -> str:
    # An unknown parameter name fails here: a new dashboard page must be given a value to be tested.
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(values[match.group(1)]), route)


@pytest.mark.django_db
class TestDashboardCsrfAndXss:
    """Every dashboard POST needs the CSRF token (no view is exempt); every page escapes what operators write, and
    the public documents (service page, its markdown, llms.txt) show it as text too. The dashboard also sends a
    Content-Security-Policy without inline scripts (server402/settings.py), a second wall."""

    def test_every_dashboard_post_without_the_csrf_token_is_403_and_changes_nothing(self, operator, planted):
        client = Client(enforce_csrf_checks=True)
        client.force_login(operator)
        before = _rows(), list(ApiKey.objects.values()), list(PricingPolicy.objects.values()), \
            list(Service.objects.values_list("name", "state", "enabled"))
        writes = {"keys/": {"label": "new", "access": "all"}, "top-up/": {"amount": "500"},
                  "rotate/": {"rotate-confirm": "on"}, "revoke/": {"revoke-confirm": "on"},
                  "check/": {}, "runs/": {"concurrency": "2"}}
        routes = [route for route in _routes() if route.startswith("dashboard/")]

        for route in routes:
            url = _url(route, planted)
            data = next((body for suffix, body in writes.items() if url.endswith(suffix)), {"name": "changed"})
            assert client.post(url, data).status_code == 403, url
            assert client.post(url, data, headers={"HX-Request": "true"}).status_code == 403, url
        assert len(routes) >= 20
        assert before == (_rows(), list(ApiKey.objects.values()), list(PricingPolicy.objects.values()),
                          list(Service.objects.values_list("name", "state", "enabled")))

    def test_markup_an_operator_wrote_is_text_on_every_page_that_shows_it(self, staff, planted):
        shown = {}
        for route in [route for route in _routes() if route.startswith("dashboard/")]:
            url = _url(route, planted)
            response = staff.get(url)
            if response.status_code != 200:
                continue
            page = response.content.decode()
            assert "<script>alert(" not in page, url
            shown[route] = {number for number in PLANTED.values() if _escaped(number) in page}
        assert shown == {
            "dashboard/": {1, 7},
            "dashboard/health/runs/": set(),
            "dashboard/health/runs/<int:run_id>/": {7},
            "dashboard/services/": {1},
            "dashboard/services/<str:service_id>/": {1, 2, 3, 4, 6, 7, 8},
            "dashboard/pricing/": {5},
            "dashboard/pricing/new/": set(),
            "dashboard/pricing/<slug:policy_id>/": {1, 5},
            "dashboard/keys/": {4},
            "dashboard/keys/<int:key_id>/": {4},
            "dashboard/payments/": {4},
            "dashboard/payments/<str:payment_id>/": {4, 8},
            "dashboard/jobs/": {4},
            "dashboard/jobs/<str:job_id>/": {1, 4, 8},
        }

    @pytest.mark.parametrize(("url", "numbers"), [
        ("/services/celebrity-recognition", {1, 2, 6}),
        ("/services/celebrity-recognition.md", {1, 3, 6}),
        ("/llms.txt", {1, 6}),
        ("/", {1}),
    ])
    def test_markup_in_a_service_is_text_in_the_public_pages_and_documents(self, client, planted, url, numbers):
        page = client.get(url).content.decode()

        assert "<script>alert(" not in page
        assert {number for number in PLANTED.values() if _escaped(number) in page} >= numbers

    def test_a_name_cannot_close_its_link_in_llms_txt(self, client):
        Service.objects.filter(id="celebrity-recognition").update(name="Face](javascript:alert(1))")
        text = client.get("/llms.txt").content.decode()
        assert "[Face\\](javascript:alert(1))](" in text and "[Face](javascript" not in text


# --- 10. A key revoked while a call is in flight ---------------------------------------------------


@pytest.fixture
def revoked_midway(monkeypatch, operator):
    """Makes the next upstream call revoke `key` (as an operator would, from the dashboard's service) while the
    call waits on the upstream, then lets the call go on."""

    def arm(key):
        real = aliyun_client.call_service

        def held(service, arguments, **options):
            api_key_revoke(api_key=ApiKey.objects.get(pk=key.pk), actor=operator)
            return real(service, arguments, **options)

        monkeypatch.setattr(aliyun_client, "call_service", held)

    return arm


@pytest.mark.django_db
class TestKeyRevokedInFlight:
    """Authorization is decided when a call is accepted. A call already past it when its key is revoked finishes,
    is charged, and is recorded once against the key (the caller was allowed to make it); every later request
    with the key is 401. A job is authorized again each time a worker starts it: one queued before the revocation
    fails uncharged when a worker takes it (the same 401 a new call gets); one a worker was already running
    finishes, like a synchronous call."""

    def test_a_call_in_flight_when_its_key_is_revoked_completes_and_is_recorded_once(self, api, upstream_emulator,
                                                                                     make_key, paid_token,
                                                                                     revoked_midway):
        key, secret = make_key()
        payment, token = paid_token("celebrity-recognition", key, max_calls=2)
        revoked_midway(key)

        response = _post(api, token=token, key=secret)

        assert response.status_code == 200
        call = ToolCall.objects.get()
        assert (call.api_key_id, call.outcome, call.amount_cents, call.payment_id) == (key.pk, "succeeded", 10,
                                                                                       payment.pk)
        key.refresh_from_db()
        assert key.revoked_at is not None and ApiKeyEvent.objects.filter(api_key=key, action="revoked").count() == 1
        refused = _post(api, token=token, key=secret)
        assert _shape(refused) == (401, {"error": "api key has been revoked"})
        payment.refresh_from_db()
        assert payment.used_calls == 1 and ToolCall.objects.count() == 1

    def test_a_job_queued_before_the_revocation_fails_uncharged_when_a_worker_takes_it(self, api, buyer):
        accepted = _post(api, token=buyer.token, key=buyer.secret, HTTP_PREFER="respond-async")
        assert accepted.status_code == 202
        job_id, job_secret = accepted.json()["jobId"], accepted.json()["jobSecret"]
        api_key_revoke(api_key=buyer.key)

        job = paid_job_run(job_id=job_id)

        assert (job.status, job.http_status, job.charged) == ("failed", 401, False)
        assert "revoked" in job.error["error"] and job.error["charged"] is False
        call = ToolCall.objects.get()
        assert (call.outcome, call.amount_cents, call.api_key_id) == ("abandoned", 0, buyer.key.pk)
        buyer.payment.refresh_from_db()
        assert buyer.payment.used_calls == 0
        # Its owner still reads why, with the job's secret; the revoked key itself reads nothing.
        assert api.get(f"/api/jobs/{job_id}", HTTP_X_JOB_SECRET=job_secret).json()["status"] == "failed"
        assert api.get(f"/api/jobs/{job_id}", HTTP_X_API_KEY=buyer.secret).status_code == 401

    def test_a_job_already_running_when_its_key_is_revoked_finishes_and_is_charged_once(self, api,
                                                                                        upstream_emulator, buyer,
                                                                                        revoked_midway):
        accepted = _post(api, token=buyer.token, key=buyer.secret, HTTP_PREFER="respond-async")
        revoked_midway(buyer.key)

        job = paid_job_run(job_id=accepted.json()["jobId"])

        assert (job.status, job.http_status, job.charged) == ("succeeded", 200, True)
        assert list(ToolCall.objects.values_list("outcome", "amount_cents")) == [("succeeded", 20)]
        buyer.key.refresh_from_db()
        assert buyer.key.revoked_at is not None


@pytest.mark.usefixtures("postgresql_only", "committed_db")
def test_a_key_revoked_on_the_dashboard_while_its_call_waits_upstream_leaves_that_call_to_finish(gated_upstream,
                                                                                                settings, operator):
    """Attack 10 with real concurrency: the call on its own connection and thread, held by the upstream while the
    operator revokes the key from the dashboard."""
    gate = gated_upstream
    settings.ALIBABA_CLOUD_READ_TIMEOUT = 60
    created = api_key_create(label="revoked midway")
    payment = payment_create(service=Service.objects.get(id="celebrity-recognition"), client=created.api_key)
    Payment.objects.filter(pk=payment.pk).update(status="paid", method="balance", max_calls=2)
    token = payment_token(payment.id)
    answers = []

    def call():
        try:
            answers.append(_post(Client(), token=token, key=created.secret).status_code)
        finally:
            connection.close()

    caller = threading.Thread(target=call)
    caller.start()
    try:
        assert gate.arrived.wait(30), "the call never reached the upstream"
        staff = Client()
        staff.force_login(operator)
        revoked = staff.post(f"/dashboard/keys/{created.api_key.pk}/revoke/", {"revoke-confirm": "on"})
        assert revoked.status_code in (200, 302)
        assert ApiKey.objects.get(pk=created.api_key.pk).revoked_at is not None
    finally:
        gate.gate.set()
        caller.join(60)

    assert answers == [200]
    assert list(ToolCall.objects.values_list("api_key_id", "outcome")) == [(created.api_key.pk, "succeeded")]
    assert _shape(_post(Client(), token=token, key=created.secret)) == (401, {"error": "api key has been revoked"})
    payment.refresh_from_db()
    assert payment.used_calls == 1

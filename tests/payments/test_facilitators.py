"""The remote x402 facilitator: /verify and /settle over HTTP, against a local server that speaks the API.

The local facilitator is honest: behind its HTTP face it runs the SDK's own
facilitator and exact-EVM scheme on the sandbox chain, so it checks real
signatures. Each test can script it to answer otherwise (an HTTP error,
garbage, the wrong JSON, too late, a rejection, a failed settlement), and it
records every request it received.
"""

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings
from eth_account import Account
from x402.http.facilitator_client import FacilitatorConfig, HTTPFacilitatorClientSync
from x402.http.utils import decode_payment_response_header
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo

from catalog.models import PricingPolicy, Service
from payments import facilitators
from payments.facilitators import FacilitatorUnavailable, RemoteFacilitator, SandboxFacilitator
from payments.models import Payment, ToolCall, X402Authorization
from tests.conftest import encode_header

URL = "/api/tools/celebrity-recognition"
IMAGE = "https://example.com/face.jpg"
UPSTREAM_FAILS = "https://sandbox.invalid/error/InternalError"


# --- A local facilitator -----------------------------------------------------

def _json(status: int, document) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(document).encode()


def honest(facilitator: "LocalFacilitator", operation: str, body: dict) -> tuple[int, dict, bytes]:
    """What a real facilitator answers: the SDK's verifier on the sandbox chain decides."""
    if body.get("x402Version") != 2:
        return _json(400, {"error": "invalid_x402_version"})
    try:
        payload = PaymentPayload.model_validate(body["paymentPayload"])
        requirements = PaymentRequirements.model_validate(body["paymentRequirements"])
    except (KeyError, TypeError, ValueError) as error:
        return _json(400, {"error": f"invalid request: {error}"})
    answer = getattr(facilitator.verifier, operation)(payload, requirements)
    return _json(200, answer.model_dump(mode="json", by_alias=True, exclude_none=True))


def http_error(status: int, headers: dict | None = None):
    def answer(facilitator, operation, body):
        return status, {"Content-Type": "text/plain", **(headers or {})}, f"facilitator error {status}".encode()
    return answer


def garbage(facilitator, operation, body):
    return 200, {"Content-Type": "application/json"}, b"<html><body>502 Bad Gateway</body></html>"


def not_the_type(facilitator, operation, body):
    return _json(200, {"ok": True, "result": ["not", "a", "facilitator", "answer"]})


def slow(seconds: float, then=honest):
    def answer(facilitator, operation, body):
        time.sleep(seconds)
        return then(facilitator, operation, body)
    return answer


def trickle(seconds_per_byte: float):
    """Headers at once, then the honest body a byte at a time: no single read waits long, the whole does."""
    def answer(facilitator, operation, body):
        status, headers, content = honest(facilitator, operation, body)
        return status, {**headers, "X-Trickle": str(seconds_per_byte)}, content
    return answer


def reject(reason: str):
    """/verify says no (still HTTP 200, as the API does)."""
    def answer(facilitator, operation, body):
        payer = body["paymentPayload"]["payload"]["authorization"]["from"]
        return _json(200, {"isValid": False, "invalidReason": reason, "invalidMessage": f"refused: {reason}",
                           "payer": payer})
    return answer


def fail(reason: str):
    """/settle says the transfer did not happen (a SettleResponse with success false)."""
    def answer(facilitator, operation, body):
        payer = body["paymentPayload"]["payload"]["authorization"]["from"]
        return _json(200, {"success": False, "errorReason": reason, "errorMessage": f"failed: {reason}",
                           "transaction": "", "network": body["paymentRequirements"]["network"], "payer": payer})
    return answer


SUPPORTED = {"kinds": [{"x402Version": 2, "scheme": "exact", "network": "eip155:84532"}], "extensions": [],
             "signers": {}}


@dataclass
class Received:
    method: str
    path: str
    headers: dict
    body: dict | None


@dataclass
class LocalFacilitator:
    """A facilitator on 127.0.0.1; `answers` maps a path to how it answers, `received` lists what came in."""

    url: str
    verifier: SandboxFacilitator
    answers: dict = field(default_factory=dict)
    received: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, answer) -> None:
        self.answers[path] = answer

    def paths(self) -> list[str]:
        with self.lock:
            return [request.path for request in self.received]

    def bodies(self, path: str) -> list[dict]:
        with self.lock:
            return [request.body for request in self.received if request.path == path]


def _handler(facilitator: LocalFacilitator):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, headers: dict, content: bytes) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(content))}.items():
                self.send_header(name, value)
            self.end_headers()
            try:
                if "X-Trickle" in headers:
                    self.wfile.flush()
                    for index in range(len(content)):
                        time.sleep(float(headers["X-Trickle"]))
                        self.wfile.write(content[index:index + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(content)
            except OSError:
                pass  # the client gave up waiting (a timeout test)

        def do_GET(self):
            with facilitator.lock:
                facilitator.received.append(Received("GET", self.path, dict(self.headers), None))
            if self.path == "/supported":
                self._answer(*_json(200, SUPPORTED))
            else:
                self._answer(*_json(404, {"error": "not found"}))

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            with facilitator.lock:
                facilitator.received.append(Received("POST", self.path, dict(self.headers), body))
            operation = {"/verify": "verify", "/settle": "settle"}.get(self.path)
            if operation is None:
                self._answer(*_json(404, {"error": "not found"}))
            elif not isinstance(body, dict):
                self._answer(*_json(400, {"error": "the body must be a JSON object"}))
            else:
                self._answer(*facilitator.answers.get(self.path, honest)(facilitator, operation, body))

    return Handler


@pytest.fixture
def local_facilitator():
    """A fresh facilitator per test (its own port, so the facilitator factory builds a new client)."""
    verifier = SandboxFacilitator(network=django_settings.X402_NETWORK, asset=django_settings.X402_ASSET,
                                  domain=django_settings.X402_ASSET_DOMAIN)
    facilitator = LocalFacilitator(url="", verifier=verifier)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(facilitator))
    server.daemon_threads = True
    facilitator.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield facilitator
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _requirements() -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact", network=django_settings.X402_NETWORK, asset=django_settings.X402_ASSET, amount="200000",
        pay_to=django_settings.X402_PAY_TO, max_timeout_seconds=300, extra=dict(django_settings.X402_ASSET_DOMAIN))


def _signed(payer, requirements: PaymentRequirements) -> PaymentPayload:
    """A PaymentPayload the official client signs for `requirements`."""
    required = PaymentRequired(x402_version=2, resource=ResourceInfo(url="http://localhost:8000/api/tools/x"),
                               accepts=[requirements])
    return payer.client.create_payment_payload(required, resource=required.resource)


def _wire(model) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- The facilitator answers verify and settle (RemoteFacilitator) -----------

def test_the_local_facilitator_speaks_the_facilitator_api(local_facilitator):
    supported = HTTPFacilitatorClientSync(FacilitatorConfig(url=local_facilitator.url)).get_supported()
    assert [(kind.x402_version, kind.scheme, kind.network) for kind in supported.kinds] == [
        (2, "exact", "eip155:84532")]


def test_a_valid_payment_is_verified_by_the_remote_facilitator(local_facilitator, x402_payer):
    requirements = _requirements()
    payload = _signed(x402_payer, requirements)
    verdict = RemoteFacilitator(local_facilitator.url, timeout=2).verify(payload, requirements)
    assert verdict.is_valid is True and verdict.invalid_reason is None
    assert verdict.payer.lower() == x402_payer.address.lower()
    assert local_facilitator.paths() == ["/verify"]


def test_it_sends_the_x402_v2_request_body_as_json(local_facilitator, x402_payer):
    requirements = _requirements()
    payload = _signed(x402_payer, requirements)
    remote = RemoteFacilitator(local_facilitator.url, timeout=2)
    remote.verify(payload, requirements)
    remote.settle(payload, requirements)
    expected = {"x402Version": 2, "paymentPayload": _wire(payload), "paymentRequirements": _wire(requirements)}
    assert local_facilitator.bodies("/verify") == [expected]
    assert local_facilitator.bodies("/settle") == [expected]
    assert {request.headers["Content-Type"] for request in local_facilitator.received} == {"application/json"}
    assert all("Authorization" not in request.headers for request in local_facilitator.received)


def test_a_payment_signed_by_someone_else_is_rejected_by_the_honest_verifier(local_facilitator, x402_payer):
    requirements = _requirements()
    forged = x402_payer.sign(_wire(_signed(x402_payer, requirements)), signer=Account.create())
    verdict = RemoteFacilitator(local_facilitator.url, timeout=2).verify(
        PaymentPayload.model_validate(forged), requirements)
    assert verdict.is_valid is False
    assert verdict.invalid_reason == "invalid_exact_evm_payload_signature"


def test_a_rejection_is_an_answer_with_its_reason(local_facilitator, x402_payer):
    local_facilitator.script("/verify", reject("insufficient_funds"))
    requirements = _requirements()
    verdict = RemoteFacilitator(local_facilitator.url, timeout=2).verify(_signed(x402_payer, requirements),
                                                                         requirements)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "insufficient_funds")
    assert verdict.payer == x402_payer.address


def test_a_settlement_names_the_transaction_network_and_payer(local_facilitator, x402_payer):
    requirements = _requirements()
    settlement = RemoteFacilitator(local_facilitator.url, timeout=2).settle(_signed(x402_payer, requirements),
                                                                           requirements)
    assert settlement.success is True and settlement.error_reason is None
    assert settlement.transaction.startswith("0x") and len(settlement.transaction) == 66
    assert settlement.network == "eip155:84532"
    assert settlement.payer.lower() == x402_payer.address.lower()


def test_a_failed_settlement_is_an_answer_with_its_reason(local_facilitator, x402_payer):
    local_facilitator.script("/settle", fail("insufficient_funds"))
    requirements = _requirements()
    settlement = RemoteFacilitator(local_facilitator.url, timeout=2).settle(_signed(x402_payer, requirements),
                                                                           requirements)
    assert (settlement.success, settlement.error_reason, settlement.transaction) == (False, "insufficient_funds", "")


@pytest.mark.parametrize("operation", ["verify", "settle"])
@pytest.mark.parametrize(("answer", "said"), [
    (http_error(500), "answered with an error"),
    (http_error(503), "answered with an error"),
    (http_error(404), "answered with an error"),
    (garbage, "answered with an error"),
    (not_the_type, "answered with an error"),
], ids=["500", "503", "404", "garbage", "not-the-type"])
def test_a_facilitator_answering_nonsense_is_unavailable(local_facilitator, x402_payer, operation, answer, said):
    local_facilitator.script(f"/{operation}", answer)
    requirements = _requirements()
    remote = RemoteFacilitator(local_facilitator.url, timeout=2)
    with pytest.raises(FacilitatorUnavailable) as raised:
        getattr(remote, operation)(_signed(x402_payer, requirements), requirements)
    assert said in raised.value.reason


def test_a_redirect_is_not_followed(local_facilitator, x402_payer):
    local_facilitator.script("/verify", http_error(307, {"Location": "/elsewhere"}))
    requirements = _requirements()
    remote = RemoteFacilitator(local_facilitator.url, timeout=2, authorization="Bearer s3cret")
    with pytest.raises(FacilitatorUnavailable):
        remote.verify(_signed(x402_payer, requirements), requirements)
    assert local_facilitator.paths() == ["/verify"]


@pytest.mark.parametrize("operation", ["verify", "settle"])
def test_a_facilitator_that_answers_too_late_is_unavailable(local_facilitator, x402_payer, operation):
    local_facilitator.script(f"/{operation}", slow(1.0))
    requirements = _requirements()
    remote = RemoteFacilitator(local_facilitator.url, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(FacilitatorUnavailable) as raised:
        getattr(remote, operation)(_signed(x402_payer, requirements), requirements)
    assert time.monotonic() - started < 0.9
    assert raised.value.reason == "the payment facilitator did not answer in time"


def test_a_facilitator_that_trickles_its_answer_is_given_up_on_in_time(local_facilitator, x402_payer):
    local_facilitator.script("/verify", trickle(0.015))  # each byte well within 0.3 s; the ~70-byte answer ~1 s
    requirements = _requirements()
    remote = RemoteFacilitator(local_facilitator.url, timeout=0.3)
    started = time.monotonic()
    try:
        remote.verify(_signed(x402_payer, requirements), requirements)
    except FacilitatorUnavailable:
        pass
    assert time.monotonic() - started < 0.6


def test_a_facilitator_that_cannot_be_reached_is_unavailable(closed_port_url, x402_payer):
    requirements = _requirements()
    with pytest.raises(FacilitatorUnavailable) as raised:
        RemoteFacilitator(closed_port_url, timeout=1).verify(_signed(x402_payer, requirements), requirements)
    assert raised.value.reason == "the payment facilitator could not be reached (ConnectError)"


def test_the_authorization_header_is_sent_to_verify_and_settle(local_facilitator, x402_payer):
    requirements = _requirements()
    payload = _signed(x402_payer, requirements)
    remote = RemoteFacilitator(local_facilitator.url, timeout=2, authorization="Bearer s3cret")
    remote.verify(payload, requirements)
    remote.settle(payload, requirements)
    assert [(r.path, r.headers.get("Authorization")) for r in local_facilitator.received] == [
        ("/verify", "Bearer s3cret"), ("/settle", "Bearer s3cret")]


# --- Which facilitator the settings name -------------------------------------

def test_the_sandbox_facilitator_is_used_without_a_url(settings):
    settings.X402_FACILITATOR_URL = None
    chosen = facilitators.facilitator()
    assert isinstance(chosen, SandboxFacilitator) and chosen.name == "sandbox"
    assert facilitators.facilitator() is chosen


def test_the_remote_facilitator_is_used_when_a_url_is_set(settings, local_facilitator, x402_payer):
    settings.X402_FACILITATOR_URL = local_facilitator.url
    settings.X402_FACILITATOR_AUTHORIZATION = "Bearer from-settings"
    chosen = facilitators.facilitator()
    assert isinstance(chosen, RemoteFacilitator) and chosen.name == local_facilitator.url
    assert facilitators.facilitator() is chosen
    requirements = _requirements()
    assert chosen.verify(_signed(x402_payer, requirements), requirements).is_valid
    assert local_facilitator.received[0].headers.get("Authorization") == "Bearer from-settings"
    settings.X402_FACILITATOR_URL = ""
    assert isinstance(facilitators.facilitator(), SandboxFacilitator)


def test_the_factory_follows_a_timeout_change(settings, local_facilitator, x402_payer):
    settings.X402_FACILITATOR_URL = local_facilitator.url
    patient = facilitators.facilitator()
    settings.X402_FACILITATOR_TIMEOUT = 0.3
    local_facilitator.script("/verify", slow(1.0))
    requirements = _requirements()
    with pytest.raises(FacilitatorUnavailable):
        facilitators.facilitator().verify(_signed(x402_payer, requirements), requirements)
    assert facilitators.facilitator() is not patient


def test_the_factory_follows_an_authorization_change(settings, local_facilitator, x402_payer):
    settings.X402_FACILITATOR_URL = local_facilitator.url
    settings.X402_FACILITATOR_AUTHORIZATION = None
    facilitators.facilitator()
    settings.X402_FACILITATOR_AUTHORIZATION = "Bearer rotated"
    requirements = _requirements()
    facilitators.facilitator().verify(_signed(x402_payer, requirements), requirements)
    assert local_facilitator.received[-1].headers.get("Authorization") == "Bearer rotated"


# --- The paid call, through the remote facilitator ---------------------------

@pytest.fixture
def remote(db, settings, local_facilitator, upstream_emulator):
    """The paid call uses the local facilitator over HTTP and the emulator as its upstream."""
    settings.X402_FACILITATOR_URL = local_facilitator.url
    return local_facilitator


def _post(api, image=IMAGE, **headers):
    return api.generic("POST", URL, json.dumps({"ImageURL": image}), content_type="application/json", **headers)


def _paid_post(api, payer, image=IMAGE):
    """POST without payment (402, nothing written, the facilitator not asked), then pay and retry."""
    challenge = _post(api, image)
    assert challenge.status_code == 402 and challenge["PAYMENT-REQUIRED"]
    assert not (Payment.objects.exists() or ToolCall.objects.exists() or X402Authorization.objects.exists())
    return _post(api, image, HTTP_PAYMENT_SIGNATURE=payer.header(challenge["PAYMENT-REQUIRED"]))


def _nothing_written():
    assert not Payment.objects.exists()
    assert not X402Authorization.objects.exists()
    assert not ToolCall.objects.exists()


def _settle_after():
    assert Service.objects.get(id="celebrity-recognition").pricing_policy_id == "aliyun-viapi"
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)


def test_a_paid_call_is_verified_and_settled_by_the_remote_facilitator(api, remote, x402_payer):
    response = _paid_post(api, x402_payer)
    assert response.status_code == 200, response.json()
    assert response.json()["data"]["Result"]
    settlement = decode_payment_response_header(response["PAYMENT-RESPONSE"])
    assert settlement.success is True and settlement.transaction.startswith("0x")
    assert settlement.network == "eip155:84532"
    assert remote.paths() == ["/verify", "/settle"]
    sent = remote.bodies("/verify")[0]
    assert sent["x402Version"] == 2 and sent == remote.bodies("/settle")[0]
    assert sent["paymentRequirements"]["amount"] == "200000"
    assert sent["paymentPayload"]["payload"]["authorization"]["from"] == x402_payer.address
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.transaction, ledger.facilitator) == (
        "settled", settlement.transaction, remote.url)
    assert ledger.payer == x402_payer.address.lower() and ledger.settled_at
    payment = ledger.payment
    assert (payment.status, payment.method, payment.used_calls) == ("paid", "x402", 1)
    call = ToolCall.objects.get()
    assert (call.outcome, call.payment_id, call.payment_method, call.amount_cents) == (
        "succeeded", payment.id, "x402", 20)
    assert call.upstream_request_id


def test_a_paid_call_settles_after_the_upstream_under_a_settle_after_policy(api, remote, x402_payer):
    _settle_after()
    response = _paid_post(api, x402_payer)
    assert response.status_code == 200, response.json()
    assert decode_payment_response_header(response["PAYMENT-RESPONSE"]).success is True
    assert remote.paths() == ["/verify", "/settle"]
    assert X402Authorization.objects.get().status == "settled"
    assert Payment.objects.get().status == "paid"


@pytest.mark.parametrize("reason", ["insufficient_funds", "invalid_exact_evm_payload_authorization_valid_before"])
def test_a_payment_the_facilitator_rejects_is_402_with_its_reason_and_writes_nothing(api, remote, x402_payer,
                                                                                      reason):
    remote.script("/verify", reject(reason))
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402
    body = response.json()
    assert body["invalidReason"] == reason and body["error"].startswith("payment authorization was refused")
    assert response["PAYMENT-REQUIRED"]
    assert remote.paths() == ["/verify"]
    _nothing_written()


def test_a_forged_signature_is_refused_by_the_facilitator_and_writes_nothing(api, remote, x402_payer):
    challenge = _post(api)
    forged = x402_payer.sign(x402_payer.payload(challenge["PAYMENT-REQUIRED"]), signer=Account.create())
    response = _post(api, HTTP_PAYMENT_SIGNATURE=encode_header(forged))
    assert (response.status_code, response.json()["invalidReason"]) == (402, "invalid_exact_evm_payload_signature")
    assert remote.paths() == ["/verify"]
    _nothing_written()


@pytest.mark.parametrize("answer", [http_error(500), garbage, not_the_type, "timeout"],
                         ids=["500", "garbage", "not-the-type", "timeout"])
def test_a_facilitator_that_cannot_verify_is_503_and_charges_nothing(api, remote, x402_payer, settings, answer):
    if answer == "timeout":
        settings.X402_FACILITATOR_TIMEOUT = 0.3
        answer = slow(1.0)
    remote.script("/verify", answer)
    response = _paid_post(api, x402_payer)
    assert response.status_code == 503
    assert response["Retry-After"]
    body = response.json()
    assert body["charged"] is False and body["invalidReason"] == "facilitator_unavailable"
    assert "nothing was charged" in body["error"]
    assert remote.paths() == ["/verify"]
    _nothing_written()


def test_a_replayed_payment_is_refused_without_asking_the_facilitator(api, remote, x402_payer):
    challenge = _post(api)
    header = x402_payer.header(challenge["PAYMENT-REQUIRED"])
    assert _post(api, HTTP_PAYMENT_SIGNATURE=header).status_code == 200
    replayed = _post(api, HTTP_PAYMENT_SIGNATURE=header)
    assert (replayed.status_code, replayed.json()["invalidReason"]) == (402, "invalid_exact_evm_nonce_already_used")
    assert remote.paths() == ["/verify", "/settle"]
    assert (Payment.objects.count(), ToolCall.objects.count()) == (1, 1)


def test_a_payment_refused_at_verify_can_be_presented_again_once_it_verifies(api, remote, x402_payer):
    remote.script("/verify", http_error(500))
    challenge = _post(api)
    header = x402_payer.header(challenge["PAYMENT-REQUIRED"])
    assert _post(api, HTTP_PAYMENT_SIGNATURE=header).status_code == 503
    remote.script("/verify", honest)
    assert _post(api, HTTP_PAYMENT_SIGNATURE=header).status_code == 200
    assert X402Authorization.objects.get().status == "settled"


def test_a_failed_settlement_before_the_call_is_402_and_the_upstream_is_not_called(api, remote, x402_payer):
    remote.script("/settle", fail("insufficient_funds"))
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402
    body = response.json()
    assert body["invalidReason"] == "insufficient_funds" and "data" not in body
    assert "settlement failed: insufficient_funds" in body["error"]
    settlement = decode_payment_response_header(response["PAYMENT-RESPONSE"])
    assert (settlement.success, settlement.error_reason) == (False, "insufficient_funds")
    assert remote.paths() == ["/verify", "/settle"]
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.error, ledger.facilitator) == ("failed", "insufficient_funds", remote.url)
    payment = Payment.objects.get()
    assert payment.status == "pending" and body["paymentId"] == payment.id
    call = ToolCall.objects.get()
    assert (call.outcome, call.http_status, call.amount_cents) == ("settlement_failed", 402, 0)
    assert call.upstream_request_id == ""


def test_a_failed_settlement_after_the_call_withholds_the_result(api, remote, x402_payer):
    _settle_after()
    remote.script("/settle", fail("insufficient_funds"))
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402
    body = response.json()
    assert "data" not in body and body["invalidReason"] == "insufficient_funds"
    assert remote.paths() == ["/verify", "/settle"]
    assert (X402Authorization.objects.get().status, Payment.objects.get().status) == ("failed", "pending")
    call = ToolCall.objects.get()
    assert (call.outcome, call.amount_cents) == ("settlement_failed", 0)
    assert call.upstream_request_id  # the upstream answered; its result was not handed out


def test_an_unanswered_settlement_is_recorded_as_unknown_and_hands_nothing_out(api, remote, x402_payer, settings):
    settings.X402_FACILITATOR_TIMEOUT = 0.3
    remote.script("/settle", slow(1.0))
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402
    body = response.json()
    assert "data" not in body and body["invalidReason"] == "settlement_unconfirmed"
    ledger = X402Authorization.objects.get()
    assert ledger.status == "unknown" and ledger.error == "the payment facilitator did not answer in time"
    assert Payment.objects.get().status == "pending"
    call = ToolCall.objects.get()
    assert (call.outcome, call.upstream_request_id) == ("settlement_failed", "")


@pytest.mark.parametrize("answer", [http_error(500), garbage], ids=["500", "garbage"])
def test_a_settlement_answered_with_an_error_is_recorded_as_unknown(api, remote, x402_payer, answer):
    remote.script("/settle", answer)
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402 and "data" not in response.json()
    assert X402Authorization.objects.get().status == "unknown"
    assert Payment.objects.get().status == "pending"


def test_an_upstream_failure_after_settling_first_hands_back_a_retry_token(api, remote, x402_payer):
    response = _paid_post(api, x402_payer, UPSTREAM_FAILS)
    assert response.status_code == 502
    body = response.json()
    assert body["charged"] is True and body["code"] == "InternalError" and body["retryToken"]
    assert decode_payment_response_header(response["PAYMENT-RESPONSE"]).success is True
    assert remote.paths() == ["/verify", "/settle"]
    assert X402Authorization.objects.get().status == "settled"
    payment = Payment.objects.get()
    assert (payment.id, payment.status, payment.remaining_calls) == (body["paymentId"], "paid", 1)
    retried = _post(api, HTTP_X_PAYMENT_TOKEN=body["retryToken"])
    assert retried.status_code == 200, retried.json()
    assert retried["X-Payment-Remaining-Calls"] == "0"
    payment.refresh_from_db()
    assert payment.remaining_calls == 0
    again = _post(api, HTTP_X_PAYMENT_TOKEN=body["retryToken"])
    assert (again.status_code, again.json()["error"]) == (402, "payment token has no remaining calls")
    assert remote.paths() == ["/verify", "/settle"]  # the retry needed no facilitator
    assert list(ToolCall.objects.order_by("started_at").values_list("outcome", flat=True)) == [
        "upstream_error", "succeeded"]


def test_an_upstream_failure_under_settle_after_is_never_settled(api, remote, x402_payer):
    _settle_after()
    response = _paid_post(api, x402_payer, UPSTREAM_FAILS)
    assert response.status_code == 502
    body = response.json()
    assert body["charged"] is False and "retryToken" not in body
    assert "PAYMENT-RESPONSE" not in response
    assert remote.paths() == ["/verify"]
    assert X402Authorization.objects.get().status == "unsettled"
    assert Payment.objects.get().status == "pending"
    assert ToolCall.objects.get().outcome == "upstream_error"


# --- A facilitator's answer is not taken on trust ---------------------------------

def pending(facilitator, operation, body):
    """/settle broadcast the transfer but could not confirm it: money may yet move."""
    payer = body["paymentPayload"]["payload"]["authorization"]["from"]
    return _json(200, {"success": False, "errorReason": "settlement_pending", "transaction": "0x" + "ab" * 32,
                       "network": body["paymentRequirements"]["network"], "payer": payer})


def succeed(transaction: str = "0x" + "cd" * 32, payer: str | None = None):
    """/settle says success, with whatever transaction and payer it is given."""
    def answer(facilitator, operation, body):
        claimed = payer or body["paymentPayload"]["payload"]["authorization"]["from"]
        return _json(200, {"success": True, "transaction": transaction,
                           "network": body["paymentRequirements"]["network"], "payer": claimed})
    return answer


def test_a_pending_settlement_is_unknown_and_the_payment_cannot_be_paid_again(api, remote, x402_payer):
    remote.script("/settle", pending)
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402 and "data" not in response.json()
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.transaction) == ("unknown", "0x" + "ab" * 32)

    again = api.post(f"/api/payments/{ledger.payment_id}/pay", {"method": "balance"}, format="json")
    assert again.status_code in (401, 409)
    remote.script("/settle", honest)
    paid = api.post(f"/api/payments/{ledger.payment_id}/pay", HTTP_PAYMENT_SIGNATURE=x402_payer.header(
        api.post(f"/api/payments/{ledger.payment_id}/pay", {"method": "x402"}, format="json")["PAYMENT-REQUIRED"]))
    assert paid.status_code == 409 and Payment.objects.get().status == "pending"


@pytest.mark.parametrize("answer", [
    succeed(transaction=""), succeed(payer="0x209693Bc6afc0C5328bA36FaF03C514EF312287C")])
def test_a_success_that_proves_nothing_withholds_the_result(api, remote, x402_payer, answer):
    remote.script("/settle", answer)
    response = _paid_post(api, x402_payer)
    assert response.status_code == 402 and response.json()["invalidReason"] == "settlement_not_proven"
    assert X402Authorization.objects.get().status == "unknown" and Payment.objects.get().status == "pending"


def test_one_transaction_cannot_pay_for_two_calls(api, remote, x402_payer):
    remote.script("/settle", succeed())
    assert _paid_post(api, x402_payer).status_code == 200
    ToolCall.objects.all().delete()

    challenge = _post(api)
    second = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge["PAYMENT-REQUIRED"]))

    assert second.status_code == 402 and second.json()["invalidReason"] == "settlement_not_proven"
    assert "already recorded" in X402Authorization.objects.get(status="unknown").error
    assert X402Authorization.objects.filter(status="settled").count() == 1


def test_a_failed_settlement_gives_its_call_back_so_paying_the_payment_buys_a_call(api, remote, x402_payer):
    remote.script("/settle", fail("insufficient_funds"))
    refused = _paid_post(api, x402_payer)
    payment_id = refused.json()["paymentId"]
    assert Payment.objects.get(pk=payment_id).used_calls == 0

    remote.script("/settle", honest)
    pay_url = f"/api/payments/{payment_id}/pay"
    header = api.post(pay_url, {"method": "x402"}, format="json")["PAYMENT-REQUIRED"]
    paid = api.post(pay_url, HTTP_PAYMENT_SIGNATURE=x402_payer.header(header))
    assert paid.status_code == 200 and paid.json()["remainingCalls"] == 1

"""Paying a tool call with x402 (PAYMENT-SIGNATURE), in sandbox mode with the in-process facilitator."""

import base64
import json
import time
import types
from datetime import UTC, datetime

import pytest
from x402.http.utils import decode_payment_required_header, decode_payment_response_header
from x402.schemas import PaymentPayload, PaymentRequirements

from catalog.models import PricingPolicy
from payments import payment_signatures
from payments.facilitators import SandboxFacilitator
from payments.models import Payment, ToolCall, X402Authorization
from tests.conftest import encode_header

pytestmark = pytest.mark.django_db

URL = "/api/tools/celebrity-recognition"
BODY = {"ImageURL": "https://example.com/face.jpg"}
SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
MAINNET_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def _post(api, url=URL, body=None, **headers):
    return api.generic("POST", url, json.dumps(BODY if body is None else body), content_type="application/json",
                       **headers)


def _challenge(api, url=URL) -> str:
    response = _post(api, url)
    assert response.status_code == 402
    return response["PAYMENT-REQUIRED"]


def _nothing_written():
    assert (Payment.objects.count(), X402Authorization.objects.count(), ToolCall.objects.count()) == (0, 0, 0)


# --- The happy path -----------------------------------------------------------

def test_a_signed_retry_runs_the_tool_settles_and_answers_with_a_receipt(api, upstream_emulator, x402_payer):
    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)))

    assert response.status_code == 200, response.json()
    assert response.json()["data"]["Action"] == "DetectCelebrity"
    receipt = decode_payment_response_header(response["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.network == "eip155:84532" and receipt.payer == x402_payer.address
    assert receipt.transaction.startswith("0x") and len(receipt.transaction) == 66
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.payer, ledger.amount, ledger.facilitator, ledger.transaction) == (
        "settled", x402_payer.address.lower(), 200000, "sandbox", receipt.transaction)
    payment = ledger.payment
    assert (payment.status, payment.method, payment.amount_cents, payment.used_calls, payment.max_calls) == (
        "paid", "x402", 20, 1, 1)
    call = ToolCall.objects.get()
    assert (call.outcome, call.payment_method, call.amount_cents, call.payment_id) == (
        "succeeded", "x402", 20, payment.id)


def test_the_payment_record_carries_the_receipt(api, upstream_emulator, x402_payer):
    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)))
    ledger = X402Authorization.objects.get()

    record = api.get(f"/api/payments/{ledger.payment_id}").json()

    assert record["method"] == "x402" and record["status"] == "exhausted"
    transaction = decode_payment_response_header(response["PAYMENT-RESPONSE"]).transaction
    assert record["receipt"] == {"network": "eip155:84532", "payer": ledger.payer, "transaction": transaction,
                                 "settledAt": record["receipt"]["settledAt"]}


def test_an_authorization_replayed_pays_for_nothing_more(api, upstream_emulator, x402_payer):
    signature = x402_payer.header(_challenge(api))
    assert _post(api, HTTP_PAYMENT_SIGNATURE=signature).status_code == 200

    for _ in range(3):
        replay = _post(api, HTTP_PAYMENT_SIGNATURE=signature)
        assert replay.status_code == 402
        assert replay.json()["invalidReason"] == "invalid_exact_evm_nonce_already_used"
        assert decode_payment_required_header(replay["PAYMENT-REQUIRED"]).error == replay.json()["error"]
    assert (ToolCall.objects.count(), X402Authorization.objects.count(), Payment.objects.count()) == (1, 1, 1)


def test_an_authorization_for_one_service_is_refused_by_another(api, upstream_emulator, x402_payer):
    signature = x402_payer.header(_challenge(api))

    response = _post(api, "/api/tools/scene-recognition", HTTP_PAYMENT_SIGNATURE=signature)

    assert response.status_code == 402 and response.json()["invalidReason"] == "resource_mismatch"
    _nothing_written()


def test_the_api_key_of_an_x402_caller_is_bound_to_its_payment(api, upstream_emulator, x402_payer, make_key):
    key, secret = make_key()
    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)),
                     HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    assert ToolCall.objects.get().api_key == key and Payment.objects.get().client == key


# --- No result, no charge -------------------------------------------------------

def test_settle_first_hands_back_a_one_call_token_when_the_upstream_fails(api, upstream_emulator, x402_payer):
    failing = {"ImageURL": "https://sandbox.invalid/error/InternalError"}
    response = _post(api, body=failing, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)))

    assert response.status_code == 502
    body = response.json()
    assert body["charged"] is True and body["code"] == "InternalError" and body["retryToken"]
    assert decode_payment_response_header(response["PAYMENT-RESPONSE"]).success
    assert X402Authorization.objects.get().status == "settled"
    retry = _post(api, HTTP_X_PAYMENT_TOKEN=body["retryToken"])
    assert retry.status_code == 200
    again = _post(api, HTTP_X_PAYMENT_TOKEN=body["retryToken"])
    assert again.status_code == 402 and again.json()["error"] == "payment token has no remaining calls"


def test_settle_after_leaves_a_failed_call_unsettled(api, upstream_emulator, x402_payer):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)
    failing = {"ImageURL": "https://sandbox.invalid/error/InternalError"}

    response = _post(api, body=failing, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)))

    assert response.status_code == 502 and response.json()["charged"] is False
    assert "PAYMENT-RESPONSE" not in response and "retryToken" not in response.json()
    assert X402Authorization.objects.get().status == "unsettled"
    assert Payment.objects.get().status == "pending"
    assert ToolCall.objects.get().amount_cents == 0


def test_settle_after_settles_once_the_result_is_in(api, upstream_emulator, x402_payer):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(settle_mode=PricingPolicy.SettleMode.SETTLE_AFTER)

    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)))

    assert response.status_code == 200 and decode_payment_response_header(response["PAYMENT-RESPONSE"]).success
    assert X402Authorization.objects.get().status == "settled" and Payment.objects.get().status == "paid"


# --- Bad input: a precise reason, never a 500, never a charge, never the upstream ---------

def _tampered(api, payer, edit, *, resign=True):
    payload = payer.payload(_challenge(api))
    edit(payload)
    if resign:
        payer.sign(payload)
    return encode_header(payload)


def _authorization(**changes):
    return lambda payload: payload["payload"]["authorization"].update(changes)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("make_header", "status", "reason", "words"), [
    (lambda api, payer: "not base64!", 400, "invalid_payload", "not base64"),
    (lambda api, payer: _b64("{not json"), 400, "invalid_payload", "not base64 of JSON"),
    (lambda api, payer: _b64("[2]"), 400, "invalid_payload", "JSON object"),
    (lambda api, payer: _b64('{"x402Version": 2}'), 400, "invalid_payload", "PaymentPayload"),
    (lambda api, payer: _tampered(api, payer, lambda p: p.update(x402Version=1)), 402, "invalid_x402_version",
     "x402Version 1"),
    (lambda api, payer: _tampered(api, payer, lambda p: p.update(x402Version=3)), 402, "invalid_x402_version",
     "x402Version 3"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["accepted"].update(network="eip155:8453")), 402,
     "network_mismatch", "eip155:8453"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["accepted"].update(asset=MAINNET_USDC)), 402,
     "asset_mismatch", MAINNET_USDC),
    (lambda api, payer: _tampered(api, payer, lambda p: p["accepted"].update(scheme="upto")), 402,
     "unsupported_scheme", "upto"),
    (lambda api, payer: _tampered(api, payer, _authorization(value="199999")), 402,
     "invalid_exact_evm_payload_authorization_value_mismatch", "exactly 200000"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["accepted"].update(amount="lots")), 402,
     "invalid_exact_evm_payload_authorization_value_mismatch", "exactly 200000"),
    (lambda api, payer: _tampered(api, payer, _authorization(to="0x209693Bc6afc0C5328bA36FaF03C514EF312287C")),
     402, "invalid_exact_evm_payload_recipient_mismatch", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"),
    (lambda api, payer: _tampered(api, payer, _authorization(validBefore=str(int(time.time()) + 365 * 86400))),
     402, "invalid_exact_evm_payload_authorization_valid_before", "valid for too long"),
    (lambda api, payer: _tampered(api, payer, _authorization(validBefore=str(int(time.time()) - 10))),
     402, "invalid_exact_evm_payload_authorization_valid_before", "expired"),
    (lambda api, payer: _tampered(api, payer, _authorization(validAfter=str(int(time.time()) + 3600))),
     402, "invalid_exact_evm_payload_authorization_valid_after", "not valid yet"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"].update(signature=p["payload"]["signature"][:-2]),
                                  resign=False), 402, "invalid_exact_evm_payload_signature", "64 bytes"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"].update(signature="0x" + "ab" * 66),
                                  resign=False), 402, "invalid_exact_evm_payload_signature", "66 bytes"),
    (lambda api, payer: _tampered(api, payer, _authorization(nonce="0x1234")), 400, "invalid_payload", "nonce"),
    # A trailing newline is not a new nonce (the SDK's hex parsing would ignore it and verify).
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"]["authorization"].update(
        nonce=p["payload"]["authorization"]["nonce"] + "\n"), resign=False), 400, "invalid_payload", "nonce"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"]["authorization"].update(
        value=p["payload"]["authorization"]["value"] + "\n"), resign=False), 400, "invalid_payload", "value"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"].update(
        signature=p["payload"]["signature"] + "\n"), resign=False), 400, "invalid_payload", "signature"),
    (lambda api, payer: _b64("[" * 2500 + "]" * 2500), 400, "invalid_payload", "not base64 of JSON"),
    (lambda api, payer: _tampered(api, payer, _authorization(validBefore=str(int(time.time()) + 20))),
     402, "invalid_exact_evm_payload_authorization_valid_before", "expires too soon"),
    (lambda api, payer: _tampered(api, payer, lambda p: p["payload"].pop("signature"), resign=False), 400,
     "invalid_payload", "signature"),
    # Signed over the right message, but by a key that is not `from`.
    (lambda api, payer: _forged(api, payer), 402, "invalid_exact_evm_payload_signature", "refused"),
    # An edit made after signing: the signature no longer covers the authorization.
    (lambda api, payer: _tampered(api, payer, _authorization(validBefore=str(int(time.time()) + 200)), resign=False),
     402, "invalid_exact_evm_payload_signature", "refused"),
])
def test_a_bad_payment_signature_is_refused_precisely_and_charges_nothing(
        api, x402_payer, make_header, status, reason, words):
    # No emulator: reaching the upstream would answer 502, not the refusal asserted here.
    response = _post(api, HTTP_PAYMENT_SIGNATURE=make_header(api, x402_payer))

    assert response.status_code == status, response.json()
    body = response.json()
    assert body["invalidReason"] == reason and words in body["error"], body
    if status == 402:
        assert decode_payment_required_header(response["PAYMENT-REQUIRED"]).error == body["error"]
    _nothing_written()


def _forged(api, payer):
    from eth_account import Account

    return encode_header(payer.sign(payer.payload(_challenge(api)), signer=Account.create()))


def test_an_oversized_payment_signature_is_refused_before_it_is_read(api):
    response = _post(api, HTTP_PAYMENT_SIGNATURE="A" * 10_000)
    assert response.status_code == 400 and "too long" in response.json()["error"]
    _nothing_written()


def test_a_payment_signature_is_used_before_a_token(api, upstream_emulator, x402_payer):
    response = _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api)), HTTP_X_PAYMENT_TOKEN="garbage")
    assert response.status_code == 200 and "PAYMENT-RESPONSE" in response


def test_a_price_not_in_usd_cannot_be_paid_with_x402(api, x402_payer):
    header = x402_payer.header(_challenge(api))
    PricingPolicy.objects.filter(id="aliyun-viapi").update(currency="EUR")
    response = _post(api, HTTP_PAYMENT_SIGNATURE=header)
    assert response.status_code == 402 and "not in USD" in response.json()["error"]
    _nothing_written()


# --- The known answer: the x402 specification's own example --------------------

SPEC_EXAMPLE = {
    "x402Version": 2,
    "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": SEPOLIA_USDC,
                 "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
                 "extra": {"name": "USDC", "version": "2"}},
    "payload": {
        "signature": "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf583"
                     "6e9bd15092f9ecab05ded3d6293af148b571c",
        "authorization": {"from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
                          "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "value": "10000",
                          "validAfter": "1740672089", "validBefore": "1740672154",
                          "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"},
    },
}
# Inside the example's validity window.
SPEC_MOMENT = 1740672100


@pytest.fixture
def frozen_clock(monkeypatch):
    from x402.mechanisms.evm.exact import facilitator as exact_facilitator

    monkeypatch.setattr(exact_facilitator, "time", types.SimpleNamespace(time=lambda: SPEC_MOMENT))


def _verify_spec_example(network: str, asset: str, name: str):
    requirements = PaymentRequirements.model_validate({**SPEC_EXAMPLE["accepted"], "network": network,
                                                        "asset": asset, "extra": {"name": name, "version": "2"}})
    payload = PaymentPayload.model_validate({**SPEC_EXAMPLE, "accepted": requirements.model_dump(by_alias=True)})
    return SandboxFacilitator(network=network, asset=asset, domain={"name": name, "version": "2"}).verify(
        payload, requirements)


def test_the_specification_example_verifies_under_the_base_sepolia_domain(frozen_clock):
    verdict = _verify_spec_example("eip155:84532", SEPOLIA_USDC, "USDC")
    assert verdict.is_valid and verdict.payer == "0x857b06519E91e3A54538791bDbb0E22373e36b66"


def test_the_specification_example_fails_under_the_base_mainnet_domain(frozen_clock):
    verdict = _verify_spec_example("eip155:8453", MAINNET_USDC, "USD Coin")
    assert not verdict.is_valid and verdict.invalid_reason == "invalid_exact_evm_payload_signature"


def test_the_specification_example_passes_our_own_checks_at_its_moment_and_not_after():
    payload = PaymentPayload.model_validate(SPEC_EXAMPLE)
    requirements = PaymentRequirements.model_validate(SPEC_EXAMPLE["accepted"])
    at = datetime.fromtimestamp(SPEC_MOMENT, tz=UTC)

    authorization = payment_signatures.authorization_check(payload, requirements, resource_url="", now=at)

    assert authorization.payer == "0x857b06519e91e3a54538791bdbb0e22373e36b66" and authorization.value == 10000
    later = datetime.fromtimestamp(1740672154, tz=UTC)
    with pytest.raises(payment_signatures.PaymentSignatureRefused, match="expired"):
        payment_signatures.authorization_check(payload, requirements, resource_url="", now=later)


# --- The legacy payment, paid with x402 -----------------------------------------

def _create_payment(api, **headers) -> dict:
    response = api.post("/api/payments", {"serviceId": "celebrity-recognition"}, format="json", **headers)
    assert response.status_code == 201
    return response.json()


def test_a_legacy_payment_paid_with_x402_makes_its_token_work(api, upstream_emulator, x402_payer):
    created = _create_payment(api)
    pay_url = f"/api/payments/{created['paymentId']}/pay"
    challenge = api.post(pay_url, {"method": "x402"}, format="json")
    assert challenge.status_code == 402
    required = decode_payment_required_header(challenge["PAYMENT-REQUIRED"])
    assert required.accepts[0].amount == "200000" and required.resource.url.endswith(pay_url)

    paid = api.post(pay_url, {"method": "x402"}, format="json",
                    HTTP_PAYMENT_SIGNATURE=x402_payer.header(challenge["PAYMENT-REQUIRED"]))

    assert paid.status_code == 200, paid.json()
    assert paid.json()["status"] == "paid" and paid.json()["method"] == "x402" and paid.json()["receipt"]
    assert decode_payment_response_header(paid["PAYMENT-RESPONSE"]).success
    assert _post(api, HTTP_X_PAYMENT_TOKEN=created["token"]).status_code == 200


def test_a_legacy_payment_is_paid_once(api, x402_payer):
    created = _create_payment(api)
    pay_url = f"/api/payments/{created['paymentId']}/pay"
    header = api.post(pay_url, {"method": "x402"}, format="json")["PAYMENT-REQUIRED"]
    assert api.post(pay_url, HTTP_PAYMENT_SIGNATURE=x402_payer.header(header)).status_code == 200

    again = api.post(pay_url, HTTP_PAYMENT_SIGNATURE=x402_payer.header(header))

    assert again.status_code == 409 and again.json()["error"] == "payment is already paid"
    assert X402Authorization.objects.count() == 1


def test_a_legacy_payment_refuses_an_authorization_for_a_tool_call(api, x402_payer):
    created = _create_payment(api)
    response = api.post(f"/api/payments/{created['paymentId']}/pay", HTTP_PAYMENT_SIGNATURE=x402_payer.header(
        _challenge(api)))
    assert response.status_code == 402 and response.json()["invalidReason"] == "resource_mismatch"
    assert Payment.objects.get().status == "pending" and X402Authorization.objects.count() == 0


def test_a_legacy_payment_of_another_client_cannot_be_paid_anonymously(api, x402_payer, make_key):
    _, secret = make_key()
    created = _create_payment(api, HTTP_AUTHORIZATION=f"Bearer {secret}")
    pay_url = f"/api/payments/{created['paymentId']}/pay"
    header = api.post(pay_url, {"method": "x402"}, format="json", HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = api.post(pay_url, HTTP_PAYMENT_SIGNATURE=x402_payer.header(header["PAYMENT-REQUIRED"]))
    # Answered as an unknown id is: another client's payment is not even confirmed to exist.
    assert (response.status_code, response.json()) == (404, {"error": "payment not found"})
    assert api.post(pay_url, {"method": "x402"}, format="json").status_code == 404
    assert Payment.objects.get().status == "pending" and not X402Authorization.objects.exists()


def test_a_call_cut_off_midway_leaves_its_settlement_marked_unknown(api, upstream_emulator, x402_payer):
    from datetime import timedelta

    from django.utils import timezone

    from payments.services import tool_calls_reconcile

    assert _post(api, HTTP_PAYMENT_SIGNATURE=x402_payer.header(_challenge(api))).status_code == 200
    # As a process killed between reserving and settling would leave them.
    ToolCall.objects.update(outcome="in_progress", started_at=timezone.now() - timedelta(hours=1))
    X402Authorization.objects.update(status="reserved", transaction="")

    assert tool_calls_reconcile(older_than=timedelta(minutes=5)) == 1

    assert X402Authorization.objects.get().status == "unknown"
    assert ToolCall.objects.get().outcome == "abandoned"

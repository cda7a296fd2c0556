"""The external check: the official x402 Python client pays our 402 on a live server, with no code of ours.

The client is x402ClientSync with ExactEvmClientScheme and a throwaway
eth_account key, driving a `requests` session through the SDK's own adapter;
the server is the whole app on a loopback port, upstream emulator included.
Tampering is done the way a client could: with the SDK's own extension points
(a requirements selector, a signer, its nonce source).
"""

import pytest
import requests
from eth_account import Account
from x402 import x402ClientSync
from x402.http.clients import x402_requests
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import ExactEvmClientScheme

from payments.models import Payment, ToolCall, X402Authorization

pytestmark = pytest.mark.usefixtures("committed_db")

BODY = {"ImageURL": "https://example.com/face.jpg"}


@pytest.fixture
def server(live_server, settings):
    settings.PUBLIC_BASE_URL = live_server.url
    settings.ALIBABA_CLOUD_ENDPOINT = f"{live_server.url}/sandbox/aliyun/{{product}}"
    return live_server.url


def _session(signer=None, selector=None) -> requests.Session:
    client = x402ClientSync(payment_requirements_selector=selector)
    client.register("eip155:*", ExactEvmClientScheme(signer=signer or Account.create()))
    return x402_requests(client)


def test_the_official_client_pays_our_402_and_gets_the_result(server):
    account = Account.create()
    response = _session(account).post(f"{server}/api/tools/celebrity-recognition", json=BODY, timeout=30)

    assert response.status_code == 200, response.text
    assert response.json()["data"]["Action"] == "DetectCelebrity"
    receipt = decode_payment_response_header(response.headers["PAYMENT-RESPONSE"])
    assert receipt.success and receipt.payer == account.address and receipt.network == "eip155:84532"
    ledger = X402Authorization.objects.get()
    assert (ledger.status, ledger.payer, ledger.transaction) == ("settled", account.address.lower(),
                                                                receipt.transaction)
    assert ToolCall.objects.get().outcome == "succeeded"


def test_the_official_client_pays_a_legacy_payment_whose_token_then_works(server):
    created = requests.post(f"{server}/api/payments", json={"serviceId": "celebrity-recognition"}, timeout=10).json()

    paid = _session().post(f"{server}/api/payments/{created['paymentId']}/pay", json={"method": "x402"}, timeout=30)

    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "paid" and paid.json()["method"] == "x402"
    called = requests.post(f"{server}/api/tools/celebrity-recognition", json=BODY, timeout=30,
                           headers={"X-Payment-Token": created["token"]})
    assert called.status_code == 200


def _tamper(**changes):
    """A selector that takes our requirement and alters it before the client signs."""
    return lambda version, requirements: requirements[0].model_copy(update=changes)


class _Forger:
    """Claims to be one account while signing with another key."""

    def __init__(self):
        self.address = Account.create().address
        self._signer = EthAccountSigner(Account.create())

    def sign_typed_data(self, *args, **kwargs):
        return self._signer.sign_typed_data(*args, **kwargs)


@pytest.mark.parametrize(("session", "reason"), [
    (lambda: _session(selector=_tamper(amount="199999")), "invalid_exact_evm_payload_authorization_value_mismatch"),
    (lambda: _session(selector=_tamper(pay_to="0x209693Bc6afc0C5328bA36FaF03C514EF312287C")),
     "invalid_exact_evm_payload_recipient_mismatch"),
    (lambda: _session(selector=_tamper(max_timeout_seconds=-60)),
     "invalid_exact_evm_payload_authorization_valid_before"),
    (lambda: _session(selector=_tamper(max_timeout_seconds=365 * 86400)),
     "invalid_exact_evm_payload_authorization_valid_before"),
    (lambda: _session(signer=_Forger()), "invalid_exact_evm_payload_signature"),
])
def test_a_tampering_client_gets_402_with_the_matching_reason(server, session, reason):
    response = session().post(f"{server}/api/tools/celebrity-recognition", json=BODY, timeout=30)

    assert response.status_code == 402, response.text
    assert response.json()["invalidReason"] == reason
    assert (Payment.objects.count(), X402Authorization.objects.count(), ToolCall.objects.count()) == (0, 0, 0)


def test_a_client_reusing_its_nonce_pays_for_one_call_only(server, monkeypatch):
    from x402.mechanisms.evm.exact import client as exact_client

    monkeypatch.setattr(exact_client, "create_nonce", lambda: "0x" + "42" * 32)
    session = _session(Account.create())
    url = f"{server}/api/tools/celebrity-recognition"

    first = session.post(url, json=BODY, timeout=30)
    second = session.post(url, json=BODY, timeout=30)

    assert first.status_code == 200
    assert second.status_code == 402 and second.json()["invalidReason"] == "invalid_exact_evm_nonce_already_used"
    assert ToolCall.objects.count() == 1 and X402Authorization.objects.count() == 1

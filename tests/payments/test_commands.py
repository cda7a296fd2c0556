"""The operator's shell: create_api_key and call_tool."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from payments.models import ApiKey, Payment, ToolCall
from payments.selectors import api_key_authenticate

pytestmark = pytest.mark.django_db


def _create_key(*args):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_create_api_key_prints_the_secret_once_and_stores_its_limits():
    secret, note = _create_key("--label", "ci agent", "--service", "celebrity-recognition", "--rate-limit", "5",
                               "--daily-quota", "100", "--balance-cents", "60")
    key = api_key_authenticate(secret)
    assert (key.label, key.rate_limit_per_minute, key.daily_quota, key.balance_cents) == ("ci agent", 5, 100, 60)
    assert list(key.allowed_services.values_list("id", flat=True)) == ["celebrity-recognition"]
    assert not key.allow_all_services
    assert "shown once" in note and secret not in note


def test_create_api_key_refuses_an_unknown_service():
    with pytest.raises(CommandError, match="unknown service id: nope"):
        _create_key("--label", "x", "--service", "nope")
    assert not ApiKey.objects.exists()


def test_call_tool_buys_a_token_with_the_balance_and_prints_the_result(upstream_emulator):
    secret, _ = _create_key("--label", "shell", "--balance-cents", "50")
    out, err = StringIO(), StringIO()
    call_command("call_tool", "celebrity-recognition", "--api-key", secret,
                 "--input", '{"ImageURL": "https://example.com/c.jpg"}', stdout=out, stderr=err)
    answer = json.loads(out.getvalue())
    assert answer["code"] == "200" and answer["data"]["Action"] == "DetectCelebrity"
    assert "HTTP 200" in err.getvalue()
    assert api_key_authenticate(secret).balance_cents == 30
    assert Payment.objects.get().used_calls == 1 and ToolCall.objects.get().outcome == "succeeded"


def test_call_tool_with_a_short_balance_buys_nothing():
    secret, _ = _create_key("--label", "poor", "--balance-cents", "5")
    with pytest.raises(CommandError, match="balance too low: 5 cents, 20 needed"):
        call_command("call_tool", "celebrity-recognition", "--api-key", secret,
                     "--input", '{"ImageURL": "https://example.com/c.jpg"}')
    assert api_key_authenticate(secret).balance_cents == 5 and not ToolCall.objects.exists()


def test_call_tool_refuses_a_wrong_key_and_bad_json():
    with pytest.raises(CommandError, match="api key is not valid"):
        call_command("call_tool", "celebrity-recognition", "--api-key", "s402_nope", "--input", "{}")
    with pytest.raises(CommandError, match="--input is not JSON"):
        call_command("call_tool", "celebrity-recognition", "--api-key", "k", "--input", "{oops")


def test_call_tool_refuses_bad_input_before_buying_anything():
    secret, _ = _create_key("--label", "careful", "--balance-cents", "50")
    with pytest.raises(CommandError, match="ImageURL must be a valid http or https URL"):
        call_command("call_tool", "celebrity-recognition", "--api-key", secret, "--input", '{"ImageURL": "ftp://x"}')
    assert api_key_authenticate(secret).balance_cents == 50 and not Payment.objects.exists()


# sandbox_pay: the whole x402 flow over real HTTP, against the app served by pytest-django's live server.

@pytest.fixture
def running_server(live_server, committed_db, settings):
    """The app on a loopback port, as `make run` serves it: the 402s, the facilitator and the emulator."""
    settings.PUBLIC_BASE_URL = live_server.url
    settings.ALIBABA_CLOUD_ENDPOINT = f"{live_server.url}/sandbox/aliyun/{{product}}"
    return live_server.url


def _sandbox_pay(*args):
    out = StringIO()
    try:
        call_command("sandbox_pay", *args, stdout=out, stderr=StringIO())
    except CommandError as error:
        return out.getvalue(), error
    return out.getvalue(), None


CELEBRITY = '{"ImageURL": "https://example.com/face.jpg"}'


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_prints_the_402_the_signature_the_result_and_the_receipt(running_server):
    from eth_account import Account

    from payments.models import X402Authorization

    payer = Account.create()
    out, error = _sandbox_pay("celebrity-recognition", "--input", CELEBRITY, "--private-key", payer.key.hex())
    assert error is None, out
    ledger = X402Authorization.objects.get()
    call = ToolCall.objects.get()
    assert (ledger.status, ledger.payer, int(ledger.amount)) == ("settled", payer.address.lower(), 200_000)
    assert (call.outcome, call.payment_method, call.amount_cents) == ("succeeded", "x402", 20)
    assert call.payment.status == "paid" and call.payment == ledger.payment
    # Step 1: the 402 and its price.
    assert f"POST {running_server}/api/tools/celebrity-recognition" in out
    assert "<- 402 Payment Required: payment required" in out
    assert "price:    $0.20 = 200000 atomic units" in out
    assert "network:  eip155:84532 (Base Sepolia" in out
    assert "asset:    0x036CbD53842c5426634e7929541eC2318f3dCF7e" in out
    assert "payTo:    0x000000000000000000000000000000000000dEaD" in out
    # Step 2: the authorization the official client signed.
    assert f"from:        {payer.address}" in out and "value:       200000 ($0.20)" in out
    assert f"nonce:       {ledger.nonce}" in out and "(65 bytes)" in out
    # Steps 3 and 4: the result and the receipt naming the ledger's transaction.
    assert "<- 200 OK" in out and '"Action": "DetectCelebrity"' in out
    assert "success:     true" in out and f"transaction: {ledger.transaction}" in out
    assert f"payer:       {payer.address}" in out and "remaining calls on this payment: 0" in out


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_prints_the_receipt_of_a_payment_settled_before_the_upstream_failed(running_server):
    from payments.models import X402Authorization

    # celebrity-recognition's policy settles first: the money moves, then the upstream refuses the image.
    out, error = _sandbox_pay("celebrity-recognition", "--input",
                              '{"ImageURL": "https://sandbox.invalid/error/InvalidImage.Download"}')
    assert "<- 400 Bad Request" in out and '"code": "InvalidImage.Download"' in out
    assert "PAYMENT-RESPONSE:" in out and "success:     true" in out and '"retryToken"' in out
    assert "the paid retry failed: HTTP 400" in str(error) and "charged" in str(error)
    assert X402Authorization.objects.get().status == "settled"
    assert ToolCall.objects.get().outcome == "client_error"


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_sends_the_api_key_a_policy_requires(running_server, make_key):
    from catalog.models import Service

    policy = Service.objects.get(id="celebrity-recognition").pricing_policy
    type(policy).objects.filter(pk=policy.pk).update(require_api_key=True)
    out, error = _sandbox_pay("celebrity-recognition", "--input", CELEBRITY)
    assert "<- 401 Unauthorized" in out and "HTTP 401: api key required" in str(error)
    key, secret = make_key()
    out, error = _sandbox_pay("celebrity-recognition", "--input", CELEBRITY, "--api-key", secret)
    assert error is None, out
    assert ToolCall.objects.get().api_key == key


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_prints_an_unknown_service_and_fails(running_server):
    out, error = _sandbox_pay("nope", "--input", "{}")
    assert "<- 404 Not Found" in out and "service 'nope' not found" in out
    assert "HTTP 404" in str(error) and "nothing was signed" in str(error)


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_prints_an_input_error_and_charges_nothing(running_server):
    from payments.models import X402Authorization

    out, error = _sandbox_pay("celebrity-recognition", "--input", '{"ImageURL": "ftp://x"}')
    assert "<- 400 Bad Request" in out and "ImageURL must be a valid http or https URL" in out
    assert "HTTP 400" in str(error)
    assert "Sign the payment" not in out
    assert not (Payment.objects.exists() or ToolCall.objects.exists() or X402Authorization.objects.exists())


@pytest.mark.django_db(transaction=True)
def test_sandbox_pay_signs_nothing_for_a_server_that_says_it_is_live(running_server, settings):
    from payments.models import X402Authorization

    settings.SERVER402_MODE = "live"  # what the server reports in X-Server402-Mode
    out, error = _sandbox_pay("celebrity-recognition", "--input", CELEBRITY)
    assert "is not in sandbox mode" in str(error) and "Sign the payment" not in out
    assert not X402Authorization.objects.exists()


def test_sandbox_pay_refuses_to_run_in_live_mode(settings):
    settings.SANDBOX = False
    with pytest.raises(CommandError, match="runs only in sandbox mode.*never do so on mainnet"):
        call_command("sandbox_pay", "celebrity-recognition", "--input", CELEBRITY, stdout=StringIO())


def test_sandbox_pay_says_how_to_start_a_server_it_cannot_reach(settings):
    settings.PUBLIC_BASE_URL = "http://127.0.0.1:9"  # discard: nothing listens there
    _, error = _sandbox_pay("celebrity-recognition", "--input", CELEBRITY)
    assert "is `make run` running? PUBLIC_BASE_URL=http://127.0.0.1:9" in str(error)


def test_sandbox_pay_refuses_bad_json_and_a_bad_private_key():
    with pytest.raises(CommandError, match="--input is not JSON"):
        call_command("sandbox_pay", "celebrity-recognition", "--input", "{oops")
    with pytest.raises(CommandError, match="not a valid hex private key") as refused:
        call_command("sandbox_pay", "celebrity-recognition", "--private-key", "0x12", stdout=StringIO())
    assert "0x12" not in str(refused.value)

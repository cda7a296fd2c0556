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

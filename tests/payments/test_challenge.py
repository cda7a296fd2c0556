"""The 402 challenge as the official x402 SDK reads it."""

import json

import pytest
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired

from catalog.models import PricingPolicy, Service

pytestmark = pytest.mark.django_db

URL = "/api/tools/celebrity-recognition"
BODY = json.dumps({"ImageURL": "https://example.com/face.jpg"})


def _challenge(api, **headers):
    response = api.generic("POST", URL, BODY, content_type="application/json", **headers)
    assert response.status_code == 402
    return response, decode_payment_required_header(response["PAYMENT-REQUIRED"])


def test_the_payment_required_header_is_an_x402_v2_payment_required(api, settings):
    response, required = _challenge(api)
    assert isinstance(required, PaymentRequired) and required.x402_version == 2
    assert required.error == "payment required"
    assert required.resource.url == f"{settings.PUBLIC_BASE_URL}{URL}"
    assert required.resource.mime_type == "application/json"
    [accept] = required.accepts
    assert (accept.scheme, accept.network, accept.asset) == (
        "exact", "eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e")
    assert accept.amount == "200000"  # USD 0.20 in USDC's six decimals
    assert accept.pay_to == settings.X402_PAY_TO
    assert accept.max_timeout_seconds == 300
    assert accept.extra == {"name": "USDC", "version": "2"}
    assert response["X-Payment-Required"] == "true"


def test_the_body_carries_the_same_requirements_as_the_header(api):
    response, required = _challenge(api)
    body = response.json()
    assert body["accepts"] == [a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in required.accepts]
    assert body["resource"]["url"] == required.resource.url and body["x402Version"] == 2
    assert body["accepts"][0]["payTo"] and body["accepts"][0]["maxTimeoutSeconds"] == 300


def test_the_header_names_the_precise_reason_of_a_refused_token(api):
    _, required = _challenge(api, HTTP_X_PAYMENT_TOKEN="garbage")
    assert required.error == "payment token is not valid"


def test_the_price_follows_the_policy_per_call(api):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(amount_cents=100, max_calls=3)
    _, required = _challenge(api)
    assert required.accepts[0].amount == "340000"  # a third of USD 1.00, rounded up to the next cent


def test_a_price_not_in_usd_offers_no_usdc_requirement(api):
    PricingPolicy.objects.filter(id="aliyun-viapi").update(currency="EUR")
    response, required = _challenge(api)
    assert required.accepts == [] and response.json()["accepts"] == []


def test_the_402_describes_the_tool_for_x402_discovery(api, settings):
    from x402.extensions.bazaar import validate_discovery_extension_spec

    response, required = _challenge(api)
    bazaar = required.extensions["bazaar"]
    assert validate_discovery_extension_spec(bazaar).valid
    assert bazaar["info"]["input"] == {
        "type": "http", "method": "POST", "bodyType": "json",
        "body": Service.objects.get(id="celebrity-recognition").example_request}
    assert bazaar["info"]["output"]["example"]["data"]["Action"] == "DetectCelebrity"
    assert response.json()["extensions"] == required.extensions


def test_the_bazaar_names_and_tags_are_printable_ascii_for_every_service(api):
    from payments.challenge import tool_resource

    for service in Service.objects.all():
        resource = tool_resource(service)
        labels = [resource.service_name, *(resource.tags or [])]
        assert resource.service_name and len(resource.tags or []) <= 5
        assert all(len(label) <= 32 and all(" " <= c <= "~" for c in label) for label in labels), service.id

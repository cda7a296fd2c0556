"""The upstream client against a scripted local HTTP server: placement, signing, retries, errors."""


import pytest
from django.test import override_settings

from catalog import aliyun_client
from catalog import aliyun_signing as signing
from catalog.models import Service


def _call(**kwargs):
    defaults = {"product": "imagerecog", "version": "2019-09-30", "action": "RecognizeScene", "method": "POST",
                "form": {"ImageURL": "https://example.com/a b.jpg"}}
    return aliyun_client.call(**{**defaults, **kwargs})


def test_it_sends_a_request_the_signer_verifies(upstream):
    answer = _call()
    assert answer.status == 200 and answer.request_id == "R" and answer.attempts == 1
    [request] = upstream.requests
    assert request["method"] == "POST" and request["path"] == "/imagerecog/"
    assert request["form"] == {"ImageURL": "https://example.com/a b.jpg"}
    query = request["query"]
    assert query["Action"] == "RecognizeScene" and query["Version"] == "2019-09-30"
    assert query["AccessKeyId"] == "LTAI5tServer402Sandbox"
    expected = signing.rpc_signature("POST", {**query, **request["form"]}, "server402-sandbox-secret-not-a-secret")
    assert query["Signature"] == expected


@override_settings(ALIBABA_CLOUD_SIGNATURE="acs3-hmac-sha256")
def test_it_can_sign_with_acs3(upstream):
    _call()
    [request] = upstream.requests
    headers = {name.lower(): value for name, value in request["headers"].items()}
    fields = signing.acs3_parse_authorization(headers["authorization"])
    assert fields["Credential"] == "LTAI5tServer402Sandbox"
    signed = fields["SignedHeaders"].split(";")
    assert "content-type" in signed and "x-acs-signature-nonce" in signed
    expected = signing.acs3_signature("POST", request["query"], headers, signed, request["raw"],
                                      "server402-sandbox-secret-not-a-secret")
    assert fields["Signature"] == expected


def test_it_places_parameters_as_the_binding_says():
    binding = {"Tasks": {"in": "body", "style": "repeatList"}, "Mode": {"in": "query"},
               "Faces": {"in": "body", "style": "json"}}
    query, form = aliyun_client.request_parameters("POST", binding, {
        "Tasks": [{"ImageURL": "https://a/1.jpg"}, {"ImageURL": "https://a/2.jpg"}],
        "Mode": 2, "Faces": [{"ImageURL": "u"}], "Flag": True,
    })
    assert query == {"Mode": "2"}
    assert form == {"Tasks.1.ImageURL": "https://a/1.jpg", "Tasks.2.ImageURL": "https://a/2.jpg",
                    "Faces": '[{"ImageURL":"u"}]', "Flag": "true"}


def test_a_get_action_sends_everything_in_the_query():
    query, form = aliyun_client.request_parameters("GET", {"JobId": {"in": "query"}}, {"JobId": "J1"})
    assert query == {"JobId": "J1"} and form == {}


def test_it_retries_a_503_with_a_fresh_nonce_and_signature(upstream):
    upstream.answers = [(503, {"Code": "ServiceUnavailable", "Message": "busy", "RequestId": "X"}, 0),
                        (200, {"RequestId": "OK", "Data": {}}, 0)]
    answer = _call()
    assert answer.request_id == "OK" and answer.attempts == 2
    first, second = upstream.requests
    assert first["query"]["SignatureNonce"] != second["query"]["SignatureNonce"]
    assert first["query"]["Signature"] != second["query"]["Signature"]


def test_it_retries_throttling_but_gives_up_after_the_attempts_allowed(upstream):
    throttled = (400, {"Code": "Throttling.User", "Message": "slow down", "RequestId": "T"}, 0)
    upstream.answers = [throttled] * 5
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    assert raised.value.kind == "throttled" and raised.value.attempts == 3
    assert len(upstream.requests) == 3


def test_it_does_not_retry_a_client_error_and_parses_it(upstream):
    upstream.answers = [(400, {"Code": "InvalidImage.Download", "Message": "cannot download",
                               "RequestId": "REQ-1", "HostId": "h", "Recommend": "r"}, 0)]
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    error = raised.value
    assert (error.kind, error.status, error.code, error.message, error.request_id) == (
        "client", 400, "InvalidImage.Download", "cannot download", "REQ-1")
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(("status", "code", "kind"), [
    (403, "AuthFailed", "auth"),
    (403, "InvalidApi.NotPurchase", "auth"),
    (400, "SignatureDoesNotMatch", "auth"),
    (404, "InvalidAccessKeyId.NotFound", "auth"),
    (400, "MissingImageURL", "client"),
    (400, "InvalidParameter", "client"),
    (500, "InternalError", "server"),
])
def test_it_classifies_upstream_codes(status, code, kind):
    assert aliyun_client.classify(status, code) == kind


def test_a_post_that_times_out_after_sending_is_not_repeated(upstream):
    upstream.answers = [(200, {"RequestId": "late"}, 1.0)]
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    assert raised.value.kind == "timeout"
    assert len(upstream.requests) == 1


def test_a_get_that_times_out_is_retried(upstream):
    upstream.answers = [(200, {"RequestId": "late"}, 1.0), (200, {"RequestId": "ok"}, 0)]
    answer = _call(action="GetAsyncJobResult", method="GET", form=None, query={"JobId": "J"})
    assert answer.request_id == "ok" and answer.attempts == 2


def test_an_answer_that_is_not_alibaba_json_is_a_server_error(upstream):
    upstream.answers = [(502, b"<html>bad gateway</html>", 0)] * 3
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    assert raised.value.kind == "server" and raised.value.status == 502


@override_settings(ALIBABA_CLOUD_ENDPOINT="http://127.0.0.1:9/{product}")
def test_an_unreachable_upstream_is_retried_then_reported():
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    assert raised.value.kind == "unreachable" and raised.value.attempts == 3


@override_settings(SANDBOX=False, ALIBABA_CLOUD_ACCESS_KEY_ID=None, ALIBABA_CLOUD_ACCESS_KEY_SECRET=None)
def test_live_mode_without_credentials_is_unconfigured(upstream):
    with pytest.raises(aliyun_client.UpstreamError) as raised:
        _call()
    assert raised.value.kind == "unconfigured"
    assert upstream.requests == []


@override_settings(SANDBOX=False, ALIBABA_CLOUD_ACCESS_KEY_ID="LTAIlive", ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cret")
def test_live_mode_signs_with_the_operators_key(upstream):
    _call()
    query = upstream.requests[0]["query"]
    assert query["AccessKeyId"] == "LTAIlive"
    assert query["Signature"] == signing.rpc_signature("POST", {**query, **upstream.requests[0]["form"]}, "s3cret")


@pytest.mark.django_db
def test_it_calls_a_catalog_service_through_its_binding(upstream):
    service = Service.objects.get(id="celebrity-recognition")
    aliyun_client.call_service(service, {"ImageURL": "https://example.com/c.jpg"})
    [request] = upstream.requests
    assert request["path"] == "/facebody/"
    assert request["query"]["Action"] == "DetectCelebrity" and request["query"]["Version"] == "2019-12-30"
    assert request["form"] == {"ImageURL": "https://example.com/c.jpg"}

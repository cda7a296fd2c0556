"""The sandbox Alibaba Cloud gateway: signatures, parameters, reserved URLs and async jobs.

Requests are signed here with the project's signer (itself proven against the
SDK vectors), laid out as the SDKs send them: common parameters in the query
string, API parameters in a form body.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from django.conf import settings

from catalog import aliyun_signing as signing
from catalog.emulator import DOCUMENTED_ERRORS, upstream_actions

SCENE = "https://viapi-test.oss-cn-shanghai.aliyuncs.com/viapi-3.0domepic/imagerecog/RecognizeScene/1.jpg"
VERSIONS = {product: entry["version"] for product, entry in upstream_actions().items()}
REQUEST_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")


def rpc_request(action, api_params=None, *, product="imagerecog", method="POST", version=None, nonce=None,
                moment=None, key=None, secret=None, tamper=None):
    """(method, path, query, form) of an HMAC-SHA1 request; `tamper` edits the params after signing."""
    common = {
        "AccessKeyId": key or settings.SANDBOX_ACCESS_KEY_ID,
        "Action": action,
        "Format": "JSON",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "Timestamp": signing.timestamp(moment),
        "Version": version or VERSIONS[product],
    }
    api_params = dict(api_params or {})
    signature = signing.rpc_signature(method, {**common, **api_params}, secret or settings.SANDBOX_ACCESS_KEY_SECRET)
    common["Signature"] = signature
    if tamper:
        tamper(common, api_params)
    if method == "GET":
        return method, f"/sandbox/aliyun/{product}/", {**common, **api_params}, {}
    return method, f"/sandbox/aliyun/{product}/", common, api_params


def send(client, request):
    method, path, query, form = request
    url = f"{path}?{urlencode(query)}"
    if method == "GET":
        return client.get(url)
    return client.post(url, data=urlencode(form), content_type="application/x-www-form-urlencoded")


def call(client, action, api_params=None, **options):
    """Sign and send one RPC call; the response's JSON is at .json()."""
    return send(client, rpc_request(action, api_params, **options))


def acs3_send(client, action, api_params, *, product="imagerecog", tamper_body=False):
    """An ACS3-HMAC-SHA256 POST, its headers signed as the current SDKs sign them."""
    body = urlencode(api_params).encode()
    headers = {
        "host": "testserver",
        "content-type": "application/x-www-form-urlencoded",
        "x-acs-action": action,
        "x-acs-version": VERSIONS[product],
        "x-acs-date": signing.timestamp(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": signing.sha256_hex(body),
    }
    signature = signing.acs3_signature("POST", {}, headers, headers, body, settings.SANDBOX_ACCESS_KEY_SECRET)
    headers["Authorization"] = signing.acs3_authorization(settings.SANDBOX_ACCESS_KEY_ID, headers, signature)
    if tamper_body:
        body = urlencode({**api_params, "ImageURL": SCENE + "?other"}).encode()
        headers["x-acs-content-sha256"] = signing.sha256_hex(body)
    content_type = headers.pop("content-type")
    return client.post(f"/sandbox/aliyun/{product}/", data=body, content_type=content_type, headers=headers)


def example(product, action):
    return upstream_actions()[product]["actions"][action]["example"]


def assert_error(response, status, code):
    body = response.json()
    assert (response.status_code, body["Code"]) == (status, code), body
    assert REQUEST_ID.fullmatch(body["RequestId"])
    assert body["Recommend"].startswith(f"https://api.aliyun.com/troubleshoot?q={code}")
    return body


# --- Success ------------------------------------------------------------------


def test_it_answers_a_signed_post_with_the_documented_example_and_a_fresh_request_id(client):
    response = call(client, "RecognizeScene", {"ImageURL": SCENE})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json;charset=utf-8"
    body = response.json()
    documented = example("imagerecog", "RecognizeScene")
    assert body["Data"] == documented["Data"]
    assert REQUEST_ID.fullmatch(body["RequestId"]) and body["RequestId"] != documented["RequestId"]
    assert call(client, "RecognizeScene", {"ImageURL": SCENE}).json()["RequestId"] != body["RequestId"]


def test_it_accepts_a_request_signed_as_a_get_with_everything_in_the_query(client):
    response = call(client, "RecognizeVehicleType", {"ImageURL": SCENE}, method="GET")

    assert response.status_code == 200, response.json()
    assert response.json()["Data"]["Elements"][0] == {"Score": 1, "Name": "car"}


def test_it_accepts_an_acs3_signed_request(client):
    response = acs3_send(client, "RecognizeScene", {"ImageURL": SCENE})

    assert response.status_code == 200, response.json()
    assert response.json()["Data"] == example("imagerecog", "RecognizeScene")["Data"]


def test_it_rejects_an_acs3_request_whose_body_changed_after_signing(client):
    assert_error(acs3_send(client, "RecognizeScene", {"ImageURL": SCENE}, tamper_body=True),
                 400, "SignatureDoesNotMatch")


def test_it_accepts_a_repeat_list_for_a_service_that_requires_tasks(client):
    response = call(client, "DeepfakeFace", {"Tasks.1.ImageURL": SCENE}, product="facebody")

    assert response.status_code == 200, response.json()
    assert response.json()["Data"] == example("facebody", "DeepfakeFace")["Data"]


# --- Signature, key, clock and nonce -------------------------------------------


def test_it_rejects_a_wrong_signature_and_echoes_its_string_to_sign(client):
    def change_the_image(common, api_params):
        api_params["ImageURL"] = SCENE + "?another"

    body = assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, tamper=change_the_image),
                        400, "SignatureDoesNotMatch")
    assert body["Message"].startswith("Specified signature is not matched with our calculation.")
    assert "POST&%2F&AccessKeyId" in body["Message"]


def test_it_rejects_an_unknown_access_key(client):
    assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, key="LTAI5tSomeoneElse"),
                 404, "InvalidAccessKeyId.NotFound")


@pytest.mark.parametrize("skew", [timedelta(minutes=-16), timedelta(minutes=16)])
def test_it_rejects_a_timestamp_more_than_fifteen_minutes_off(client, skew):
    response = call(client, "RecognizeScene", {"ImageURL": SCENE}, moment=datetime.now(UTC) + skew)
    assert_error(response, 400, "InvalidTimeStamp.Expired")


def test_it_rejects_a_malformed_timestamp(client):
    def local_time(common, api_params):
        common["Timestamp"] = "2024-01-02 03:04:05"

    assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, tamper=local_time),
                 400, "InvalidTimeStamp.Format")


def test_it_rejects_a_reused_nonce(client):
    nonce = uuid.uuid4().hex
    assert call(client, "RecognizeScene", {"ImageURL": SCENE}, nonce=nonce).status_code == 200

    assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, nonce=nonce), 400, "SignatureNonceUsed")


def test_a_request_with_a_bad_signature_does_not_use_up_its_nonce(client):
    nonce = uuid.uuid4().hex
    forged = call(client, "RecognizeScene", {"ImageURL": SCENE}, nonce=nonce, secret="not-the-secret")
    assert_error(forged, 400, "SignatureDoesNotMatch")

    assert call(client, "RecognizeScene", {"ImageURL": SCENE}, nonce=nonce).status_code == 200


@pytest.mark.parametrize("name", ["Signature", "SignatureNonce", "Timestamp", "AccessKeyId"])
def test_it_names_a_missing_common_parameter_in_the_code(client, name):
    def drop(common, api_params):
        del common[name]

    assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, tamper=drop), 400, f"Missing{name}")


# --- Product, action and version ----------------------------------------------


def test_it_answers_invalid_api_for_an_unknown_action(client):
    assert_error(call(client, "RecognizeUnicorns", {"ImageURL": SCENE}), 404, "InvalidApi.NotFound")


def test_it_answers_invalid_api_for_an_unknown_product(client):
    response = call(client, "RecognizeScene", {"ImageURL": SCENE}, product="unicorns", version="2019-09-30")
    body = assert_error(response, 404, "InvalidApi.NotFound")
    assert body["HostId"] == "unicorns.cn-shanghai.aliyuncs.com"


def test_it_rejects_a_version_the_product_does_not_have(client):
    assert_error(call(client, "RecognizeScene", {"ImageURL": SCENE}, version="2019-12-30"), 400, "InvalidVersion")


# --- API parameters -----------------------------------------------------------


def test_it_names_a_missing_image_url_like_alibaba(client):
    body = assert_error(call(client, "RecognizeScene", {}), 400, "MissingImageURL")

    assert body["Message"] == "ImageURL is mandatory for this action."
    assert body["HostId"] == "imagerecog.cn-shanghai.aliyuncs.com"


def test_it_treats_an_empty_required_parameter_as_missing(client):
    assert_error(call(client, "RecognizeScene", {"ImageURL": ""}), 400, "MissingImageURL")


def test_it_rejects_an_ftp_image_url(client):
    body = assert_error(call(client, "RecognizeScene", {"ImageURL": "ftp://example.com/a.jpg"}),
                        400, "InvalidParameter")
    assert "ImageURL" in body["Message"]


def test_it_rejects_an_ftp_url_inside_a_repeat_list(client):
    response = call(client, "DeepfakeFace", {"Tasks.1.ImageURL": "ftp://example.com/a.jpg"}, product="facebody")
    assert "Tasks.1.ImageURL" in assert_error(response, 400, "InvalidParameter")["Message"]


def test_it_requires_the_repeat_list_of_a_service_that_needs_tasks(client):
    assert_error(call(client, "DeepfakeFace", {}, product="facebody"), 400, "MissingTasks")


# --- Reserved URLs ------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), [
    ("InvalidImage.Download", 400), ("InvalidImage.URL", 400), ("InvalidImage.Content", 400),
    ("InvalidImage.Resolution", 400), ("InvalidParameter", 400), ("Throttling.User", 400),
    ("AuthFailed", 403), ("InvalidApi.NotPurchase", 403), ("Timeout", 408), ("InternalError", 500),
    ("ServiceUnavailable", 503),
])
def test_a_reserved_error_url_gives_that_documented_error(client, code, status):
    response = call(client, "RecognizeScene", {"ImageURL": f"https://sandbox.invalid/error/{code}"})

    body = assert_error(response, status, code)
    assert body["Message"] == DOCUMENTED_ERRORS[code][1]


def test_a_reserved_error_url_with_an_unknown_code_gives_a_400_with_that_code(client):
    assert_error(call(client, "RecognizeScene", {"ImageURL": "http://sandbox.invalid/error/Made.Up"}),
                 400, "Made.Up")


def test_a_reserved_error_url_works_inside_a_repeat_list(client):
    response = call(client, "DeepfakeFace", {"Tasks.1.ImageURL": "https://sandbox.invalid/error/Timeout"},
                    product="facebody")
    assert_error(response, 408, "Timeout")


def test_any_other_url_on_the_reserved_host_cannot_be_downloaded(client):
    assert_error(call(client, "RecognizeScene", {"ImageURL": "https://sandbox.invalid/cat.jpg"}),
                 400, "InvalidImage.Download")


def test_a_slow_url_waits_before_answering_normally(client):
    started = time.monotonic()
    response = call(client, "RecognizeScene", {"ImageURL": "https://sandbox.invalid/slow/300"})

    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200, response.json()


def test_the_configured_latency_delays_every_success(client, settings):
    settings.SANDBOX_LATENCY_MS = 200
    started = time.monotonic()

    assert call(client, "RecognizeScene", {"ImageURL": SCENE}).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_the_configured_latency_delays_parameter_errors_too(client, settings):
    # A health probe is answered with a parameter error; a slow upstream is slow for it as well.
    settings.SANDBOX_LATENCY_MS = 200
    started = time.monotonic()

    assert_error(call(client, "RecognizeScene", {}), 400, "MissingImageURL")
    assert time.monotonic() - started >= 0.2


def test_a_reset_url_is_answered_with_an_error_where_the_server_cannot_drop_connections(client):
    response = call(client, "RecognizeScene", {"ImageURL": "https://sandbox.invalid/reset"})
    assert_error(response, 500, "Sandbox.ResetUnsupported")


# --- Async jobs ---------------------------------------------------------------


def test_an_async_job_is_queued_then_processing_then_done_with_the_documented_result(client):
    submitted = call(client, "TaggingAdImage", {"ImageURL": SCENE})
    assert submitted.status_code == 200, submitted.json()
    job_id = submitted.json()["RequestId"]
    assert "Data" not in submitted.json()

    polls = [call(client, "GetAsyncJobResult", {"JobId": job_id}, method="GET").json() for _ in range(4)]

    assert [poll["Data"]["Status"] for poll in polls] == [
        "QUEUING", "PROCESSING", "PROCESS_SUCCESS", "PROCESS_SUCCESS"]
    assert all(poll["Data"]["JobId"] == job_id for poll in polls)
    assert "Result" not in polls[0]["Data"]
    assert json.loads(polls[2]["Data"]["Result"]) == example("imagerecog", "TaggingAdImage")["Data"]


def test_get_async_job_result_accepts_a_post_too(client):
    job_id = call(client, "TaggingAdImage", {"ImageURL": SCENE}).json()["RequestId"]
    assert call(client, "GetAsyncJobResult", {"JobId": job_id}).json()["Data"]["Status"] == "QUEUING"


def test_get_async_job_result_rejects_an_unknown_job(client):
    response = call(client, "GetAsyncJobResult", {"JobId": str(uuid.uuid4()).upper()}, method="GET")
    assert_error(response, 400, "InvalidParameter")


def test_a_job_is_only_known_to_its_own_product(client):
    job_id = call(client, "TaggingAdImage", {"ImageURL": SCENE}).json()["RequestId"]
    response = call(client, "GetAsyncJobResult", {"JobId": job_id}, product="imageenhan")
    assert_error(response, 400, "InvalidParameter")


@pytest.mark.parametrize(("path", "status", "code"), [
    ("PROCESS_FAILED", "PROCESS_FAILED", "PROCESS_FAILED"),
    ("PROCESS_FAILED/InvalidImage.Download", "PROCESS_FAILED", "InvalidImage.Download"),
    ("TIMEOUT_FAILED", "TIMEOUT_FAILED", "TIMEOUT_FAILED"),
    ("LIMIT_RETRY_FAILED", "LIMIT_RETRY_FAILED", "LIMIT_RETRY_FAILED"),
])
def test_a_reserved_job_url_ends_the_job_in_the_status_it_names(client, path, status, code):
    job_id = call(client, "TaggingAdImage", {"ImageURL": f"https://sandbox.invalid/job/{path}"}).json()["RequestId"]

    polls = [call(client, "GetAsyncJobResult", {"JobId": job_id}, method="GET").json()["Data"] for _ in range(4)]

    assert [poll["Status"] for poll in polls] == ["QUEUING", "PROCESSING", status, status]
    assert polls[2]["ErrorCode"] == code and polls[2]["ErrorMessage"] and "Result" not in polls[2]


def test_a_stuck_job_stays_processing(client):
    job_id = call(client, "TaggingAdImage", {"ImageURL": "https://sandbox.invalid/job/stuck"}).json()["RequestId"]

    polls = [call(client, "GetAsyncJobResult", {"JobId": job_id}, method="GET").json()["Data"] for _ in range(5)]

    assert [poll["Status"] for poll in polls] == ["QUEUING", *["PROCESSING"] * 4]


def test_a_job_url_means_nothing_to_a_synchronous_action(client):
    response = call(client, "RecognizeScene", {"ImageURL": "https://sandbox.invalid/job/PROCESS_FAILED"})
    assert_error(response, 400, "InvalidImage.Download")


# --- Over real HTTP -----------------------------------------------------------


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn_url(tmp_path_factory):
    """The app under gunicorn, as the Procfile serves it: the only server that lets a view drop a connection."""
    port = free_port()
    root = Path(settings.BASE_DIR)
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {**os.environ, "SECRET_KEY": os.environ.get("SECRET_KEY", "x"), "PORT": str(port), "SERVER402_ENV_FILE": "",
           "WEB_CONCURRENCY": "1", "WEB_THREADS": "2", "LOG_LEVEL": "warning"}
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "server402.wsgi"], cwd=root, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    # The port accepts as soon as the arbiter binds it; the worker answers once Django is loaded.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"gunicorn did not start: {log.read_text(errors='replace')[-3000:]}")
    yield f"http://127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def http_send(base, request):
    method, path, query, form = request
    with httpx.Client(base_url=base, timeout=10) as http:
        return http.request(method, path, params=query, data=form or None)


@pytest.mark.slow
def test_under_gunicorn_a_signed_call_is_answered_over_http(gunicorn_url):
    response = http_send(gunicorn_url, rpc_request("RecognizeScene", {"ImageURL": SCENE}))

    assert response.status_code == 200, response.text
    assert response.json()["Data"] == example("imagerecog", "RecognizeScene")["Data"]


@pytest.mark.slow
def test_under_gunicorn_a_reset_url_drops_the_connection_without_an_answer(gunicorn_url):
    with pytest.raises(httpx.RemoteProtocolError):
        http_send(gunicorn_url, rpc_request("RecognizeScene", {"ImageURL": "https://sandbox.invalid/reset"}))

"""Async upstream actions through the client: submit, poll GetAsyncJobResult with back-off, map its statuses.

Against the scripted upstream (tests/conftest.py `upstream`), so every status,
failure and timing is chosen by the test.
"""

import json
import time
import types

import pytest

from catalog import aliyun_client
from catalog.models import Service

pytestmark = pytest.mark.django_db

SUBMITTED = (200, {"RequestId": "JOB-1", "Message": "submitted"}, 0)


def _poll(status, **data):
    return (200, {"RequestId": "POLL", "Data": {"JobId": "JOB-1", "Status": status, **data}}, 0)


@pytest.fixture
def tagging():
    return Service.objects.get(id="ad-image-tagging")


@pytest.fixture
def sleeps(monkeypatch):
    """The waits between polls, recorded instead of slept."""
    waited = []
    # The client's own clock only: the scripted server's thread keeps sleeping for real.
    monkeypatch.setattr(aliyun_client, "time", types.SimpleNamespace(sleep=waited.append, monotonic=time.monotonic))
    return waited


def test_an_async_action_is_submitted_once_then_polled_until_its_result(upstream, tagging, sleeps, settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS, settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.5, 2.0
    result = {"tagInfo": {"sceneInfo": [{"category": "game", "score": 0.4}]}}
    upstream.answers = [SUBMITTED, _poll("QUEUING"), _poll("PROCESSING"), _poll("PROCESSING"), _poll("PROCESSING"),
                        _poll("PROCESS_SUCCESS", Result=json.dumps(result))]
    heard = []

    answer = aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"}, wait_seconds=60,
                                        progress=lambda job_id, status: heard.append((job_id, status)))

    assert answer.request_id == "JOB-1" and answer.body == {"RequestId": "JOB-1", "Data": result}
    assert answer.attempts == 6
    submit, *polls = upstream.requests
    assert submit["query"]["Action"] == "TaggingAdImage" and submit["form"] == {"ImageURL": "https://example.com/a.jpg"}
    assert all(poll["method"] == "GET" and poll["path"] == "/imagerecog/" for poll in polls)
    assert all(poll["query"]["Action"] == "GetAsyncJobResult" and poll["query"]["JobId"] == "JOB-1" for poll in polls)
    # Doubling from the first interval up to the cap.
    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert heard == [("JOB-1", "SUBMITTED"), ("JOB-1", "QUEUING"), ("JOB-1", "PROCESSING"), ("JOB-1", "PROCESSING"),
                     ("JOB-1", "PROCESSING"), ("JOB-1", "PROCESS_SUCCESS")]


@pytest.mark.parametrize(("status", "code", "kind"), [
    ("PROCESS_FAILED", "InternalError", "server"),
    ("PROCESS_FAILED", "InvalidImage.Download", "client"),
    ("PROCESS_FAILED", "", "server"),
    ("TIMEOUT_FAILED", "", "timeout"),
    ("LIMIT_RETRY_FAILED", "", "server"),
])
def test_each_failed_status_is_an_upstream_error_of_its_kind(upstream, tagging, sleeps, status, code, kind):
    upstream.answers = [SUBMITTED, _poll(status, ErrorCode=code, ErrorMessage="paramsIllegal")]

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"})

    error = raised.value
    assert (error.kind, error.code, error.request_id) == (kind, code or status, "JOB-1")
    assert error.message == f"the upstream job ended in {status}: paramsIllegal"


def test_a_job_still_running_when_the_wait_is_over_times_out(upstream, tagging, settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS = settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.05
    upstream.answers = [SUBMITTED]
    upstream.default = _poll("PROCESSING")

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"}, wait_seconds=0.3)

    assert (raised.value.kind, raised.value.code) == ("timeout", aliyun_client.ASYNC_JOB_TIMEOUT)
    assert raised.value.message == "the upstream job JOB-1 did not finish within 0.3 s"
    assert 3 <= len(upstream.requests) <= 9


def test_the_synchronous_wait_defaults_to_its_setting(upstream, tagging, settings):
    settings.ALIBABA_CLOUD_POLL_SECONDS = settings.ALIBABA_CLOUD_POLL_MAX_SECONDS = 0.05
    settings.ALIBABA_CLOUD_ASYNC_WAIT_SECONDS = 0.2
    upstream.answers = [SUBMITTED]
    upstream.default = _poll("QUEUING")

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"})

    assert raised.value.code == aliyun_client.ASYNC_JOB_TIMEOUT


def test_a_poll_that_fails_once_is_survived(upstream, tagging, sleeps, settings):
    settings.ALIBABA_CLOUD_ATTEMPTS = 1
    failure = (503, {"RequestId": "X", "Code": "ServiceUnavailable", "Message": "busy"}, 0)
    upstream.answers = [SUBMITTED, failure, _poll("PROCESS_SUCCESS", Result="{}")]
    heard = []

    answer = aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"},
                                        progress=lambda job_id, status: heard.append(status))

    assert answer.body["Data"] == {}
    # The failed poll is heard too (as ""), so a job's lease is renewed through a slow upstream.
    assert heard == ["SUBMITTED", "", "PROCESS_SUCCESS"]


def test_polls_failing_three_times_in_a_row_give_up(upstream, tagging, sleeps, settings):
    settings.ALIBABA_CLOUD_ATTEMPTS = 1
    upstream.answers = [SUBMITTED]
    upstream.default = (503, {"RequestId": "X", "Code": "ServiceUnavailable", "Message": "busy"}, 0)

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"}, wait_seconds=60)

    assert raised.value.kind == "server" and raised.value.request_id == "JOB-1"
    assert len(upstream.requests) == 1 + aliyun_client.POLL_FAILURES_ALLOWED


def test_a_job_the_upstream_no_longer_knows_fails_at_once(upstream, tagging, sleeps):
    upstream.answers = [SUBMITTED, (400, {"RequestId": "X", "Code": "InvalidParameter", "Message": "no job"}, 0)]

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"}, wait_seconds=60)

    assert (raised.value.kind, raised.value.code) == ("client", "InvalidParameter")
    assert len(upstream.requests) == 2


def test_an_unknown_status_is_the_upstreams_failure(upstream, tagging, sleeps):
    upstream.answers = [SUBMITTED, _poll("EXPLODED")]

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"})

    assert raised.value.kind == "server" and "'EXPLODED'" in raised.value.message


def test_a_submission_without_a_request_id_cannot_be_polled(upstream, tagging, sleeps):
    upstream.answers = [(200, {"Message": "submitted"}, 0)]

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"})

    assert raised.value.kind == "server" and len(upstream.requests) == 1


def test_a_submission_refused_is_not_polled(upstream, tagging, sleeps):
    upstream.answers = [(400, {"RequestId": "X", "Code": "MissingImageURL", "Message": "ImageURL is mandatory"}, 0)]

    with pytest.raises(aliyun_client.UpstreamError) as raised:
        aliyun_client.call_service(tagging, {})

    assert raised.value.code == "MissingImageURL" and len(upstream.requests) == 1 and sleeps == []


def test_resuming_polls_the_known_job_without_submitting(upstream, tagging, sleeps):
    upstream.answers = [_poll("PROCESS_SUCCESS", Result='{"a": 1}')]

    answer = aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"}, resume_job_id="JOB-1")

    assert answer.body["Data"] == {"a": 1}
    [poll] = upstream.requests
    assert poll["query"]["Action"] == "GetAsyncJobResult" and poll["query"]["JobId"] == "JOB-1"


def test_a_synchronous_action_is_never_polled(upstream, sleeps):
    answer = aliyun_client.call_service(Service.objects.get(id="scene-recognition"), {"ImageURL": "https://e.com/a"})

    assert answer.request_id == "R" and len(upstream.requests) == 1 and sleeps == []


@pytest.mark.parametrize(("result", "parsed"), [
    ('{"a": [1, 2]}', {"a": [1, 2]}),
    ("[1, 2]", [1, 2]),
    # viapi's example: a JSON string holding a JSON string.
    ('"{\\"jsonUrl\\": \\"http://x\\"}"', {"jsonUrl": "http://x"}),
    ("http://example.com/result.png", "http://example.com/result.png"),
    ("{not json", "{not json"),
    ("", ""),
    (None, None),
    ({"already": "an object"}, {"already": "an object"}),
])
def test_the_result_string_is_parsed_into_what_it_holds(result, parsed):
    assert aliyun_client.parsed_result(result) == parsed


def test_the_manuals_own_example_result_parses(upstream, tagging, sleeps):
    # Seed 003, GetAsyncJobResult: Result is a JSON string whose tags hold JSON strings of their own.
    example = ('{"tags":[{"confidence":-1,"value":"{\\"tagInfo\\": {\\"humanInfo\\": [[{\\"category\\": '
               '\\"human-real-normal\\", \\"score\\": 0.9690580798778683}]]}}"}]}')
    upstream.answers = [SUBMITTED, _poll("PROCESS_SUCCESS", Result=example)]

    answer = aliyun_client.call_service(tagging, {"ImageURL": "https://example.com/a.jpg"})

    tags = answer.body["Data"]["tags"]
    assert tags[0]["confidence"] == -1 and json.loads(tags[0]["value"])["tagInfo"]["humanInfo"][0][0]["score"] > 0.9

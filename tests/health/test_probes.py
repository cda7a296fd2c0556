"""The free probe and the full check through the real upstream client: what each answer means."""

import pytest
from django.test import override_settings

from catalog.models import Service
from health import probes

pytestmark = pytest.mark.django_db


def service(service_id="celebrity-recognition", **changes) -> Service:
    found = Service.objects.get(id=service_id)
    for name, value in changes.items():
        setattr(found, name, value)
    return found


def test_it_calls_a_service_healthy_when_the_emulator_answers_its_parameter_error(upstream_emulator):
    outcome = probes.probe(service())

    assert outcome.status == "healthy" and outcome.kind == "probe"
    assert outcome.http_status == 400 and outcome.upstream_code == "MissingImageURL"
    assert outcome.latency_ms is not None and outcome.upstream_request_id
    assert "MissingImageURL" in outcome.message


def test_a_parameter_error_slower_than_the_sla_is_degraded(upstream_emulator, settings):
    settings.SANDBOX_LATENCY_MS = 120

    outcome = probes.probe(service(sla_max_latency_ms=50))

    assert outcome.status == "degraded" and outcome.latency_ms >= 120
    assert "slower than the SLA's 50 ms" in outcome.message


def test_an_action_without_a_required_parameter_is_probed_with_a_broken_image_url(upstream_emulator):
    checked = service("face-comparison")
    assert probes.probe_arguments(checked) == {"ImageURLA": probes.NOT_A_URL}

    outcome = probes.probe(checked)

    assert outcome.status == "healthy" and outcome.upstream_code == "InvalidParameter"


def test_an_action_with_nothing_to_leave_out_has_no_free_probe(upstream):
    outcome = probes.probe(service("face-database-list"))

    assert outcome.status == "unknown" and "no free probe" in outcome.message
    assert upstream.requests == []


def test_the_probe_sends_one_signed_request_without_the_image(upstream):
    refusal = {"Code": "MissingImageURL", "Message": "ImageURL is mandatory.", "RequestId": "Q"}
    upstream.answers.append((400, refusal, 0))

    outcome = probes.probe(service())

    [request] = upstream.requests
    assert request["query"]["Action"] == "DetectCelebrity" and "Signature" in request["query"]
    assert "ImageURL" not in request["form"] and "ImageURL" not in request["query"]
    assert (outcome.status, outcome.upstream_request_id) == ("healthy", "Q")


@pytest.mark.parametrize(("answer", "code", "reason"), [
    ((403, {"Code": "AuthFailed", "Message": "RAM says no", "RequestId": "A"}), "AuthFailed", "credentials"),
    ((403, {"Code": "InvalidApi.NotPurchase", "Message": "not purchased", "RequestId": "B"}),
     "InvalidApi.NotPurchase", "subscription"),
    ((500, {"Code": "InternalError", "Message": "boom", "RequestId": "C"}), "InternalError", "HTTP 500"),
    ((503, b"<html>Service Unavailable</html>"), "", "HTTP 503 without an error body"),
    ((200, b"<html>a captive portal</html>"), "", "200 without a JSON object"),
    ((200, {"RequestId": "D", "Data": {}}), "", "unexpected answer"),
])
def test_it_calls_a_service_unhealthy_with_the_reason_stored(upstream, answer, code, reason):
    upstream.answers.append((*answer, 0))

    outcome = probes.probe(service())

    assert outcome.status == "unhealthy"
    assert outcome.upstream_code == code and reason in outcome.message
    assert len(upstream.requests) == 1, "a probe is never retried"


def test_an_upstream_that_hangs_is_unhealthy_after_the_read_timeout(upstream):
    upstream.answers.append((400, {"Code": "MissingImageURL", "Message": "late"}, 2.0))

    outcome = probes.probe(service())

    assert outcome.status == "unhealthy" and outcome.message == "the upstream did not answer in time"


def test_a_closed_connection_is_unhealthy(upstream, monkeypatch):
    # An endpoint nobody listens on: the connection is refused.
    with override_settings(ALIBABA_CLOUD_ENDPOINT="http://127.0.0.1:9/{product}"):
        outcome = probes.probe(service())

    assert outcome.status == "unhealthy" and "could not connect" in outcome.message


def test_throttling_is_degraded(upstream):
    upstream.answers.append((400, {"Code": "Throttling.User", "Message": "slow down", "RequestId": "T"}, 0))

    assert probes.probe(service()).status == "degraded"


def test_live_mode_without_credentials_is_unconfigured(upstream, settings):
    # upstream before settings: pytest-django restores its overrides last, so they must be entered last.
    settings.SANDBOX = False
    settings.ALIBABA_CLOUD_ACCESS_KEY_ID = settings.ALIBABA_CLOUD_ACCESS_KEY_SECRET = ""

    outcome = probes.probe(service())

    assert outcome.status == "unconfigured" and upstream.requests == []


def test_the_full_check_sends_the_example_and_validates_the_answer(upstream_emulator):
    outcome = probes.full_check(service())

    assert outcome.kind == "full" and outcome.status == "healthy", outcome.message
    assert "matching the output schema" in outcome.message


def test_the_full_check_is_unhealthy_when_the_answer_breaks_the_output_schema(upstream_emulator):
    strict = service(output_schema={"type": "object", "required": ["data"],
                                    "properties": {"data": {"type": "object", "required": ["Faces"]}}})

    outcome = probes.full_check(strict)

    assert outcome.status == "unhealthy"
    assert "does not match the output schema at data: 'Faces' is a required property" in outcome.message


def test_the_full_check_is_unhealthy_when_the_example_is_refused(upstream_emulator):
    refused = service(example_request={"ImageURL": "https://sandbox.invalid/error/InvalidImage.Download"})

    outcome = probes.full_check(refused)

    assert outcome.status == "unhealthy" and outcome.upstream_code == "InvalidImage.Download"


def test_a_check_that_breaks_is_stored_as_unknown_with_the_reason(monkeypatch):
    def broken(service):
        raise KeyError("Data")

    monkeypatch.setattr(probes, "probe", broken)

    outcome = probes.check(service(), full=False)

    assert outcome.status == "unknown" and outcome.message == "the check itself failed: KeyError: 'Data'"

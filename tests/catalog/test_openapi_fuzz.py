"""Schemathesis against the live /openapi.json: no 500s, and no answer the document does not describe.

A bounded run of every phase (examples, coverage, fuzzing, stateful) with every
default check, over every operation of the document the server serves, on
pytest-django's live server. The upstream is the server's own sandbox emulator,
so nothing leaves the machine.

A schema cannot say what a valid x402 signature is, so a schema-valid
PAYMENT-SIGNATURE is made a real one, signed by a throwaway wallet for the tool
being called: those calls are paid, reach the upstream and answer 200, which
puts the success envelope and its headers under the checks too. Nor can it say
what the upstream will refuse (an unknown JobId, a task without its image), so
for tools the positive-data check leaves out the upstream's own refusals.
"""

import gc
import re
import threading
import time

import pytest
import schemathesis
from django.core.servers.basehttp import WSGIRequestHandler
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from x402.http.utils import encode_payment_required_header

from catalog.models import Service
from payments import challenge
from payments.models import ToolCall

pytestmark = pytest.mark.usefixtures("committed_db")

TOOLS = "/api/tools/"
# What a well-formed request may get: 402 is how an unpaid (or not really paid) call is answered.
ACCEPTED = ["2xx", "401", "402", "403", "404", "409", "429", "5xx"]
# What a malformed one may get: for a tool, 402 too, because a POST without body or payment is a price enquiry.
REJECTED = ["400", "401", "402", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]

CONFIG = {
    "generation": {"deterministic": True, "max-examples": 3},
    "cache": {"enabled": False},
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}},
    "operations": [{"include-path-regex": f"^{TOOLS}", "checks": {
        "positive_data_acceptance": {"enabled": False},
        "negative_data_rejection": {"expected-statuses": REJECTED}}}],
}


@schemathesis.check
def tool_input_valid_by_the_document_is_accepted(ctx, response, case):
    """positive_data_acceptance for tools: a 400 must be the upstream's refusal (it carries its `code`)."""
    if not case.path.startswith(TOOLS) or case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 300 or status >= 500 or status in (401, 402, 403, 404, 409, 429):
        return None
    if status == 400 and "code" in _json(response):
        return None
    raise AssertionError(f"schema-valid input refused by Server402 itself: {status} {response.text[:300]}")


def _json(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@pytest.fixture
def live_api(live_server, settings, monkeypatch):
    # Django's test server writes an answer's headers and body separately: with Nagle's algorithm each
    # answer would wait out the client's delayed ACK (40 ms), making the run ten times slower.
    monkeypatch.setattr(WSGIRequestHandler, "disable_nagle_algorithm", True)
    settings.PUBLIC_BASE_URL = live_server.url
    settings.ALIBABA_CLOUD_ENDPOINT = f"{live_server.url}/sandbox/aliyun/{{product}}"
    yield live_server.url
    # The engine leaves its HTTP sessions in its threads' locals: collected, they close their kept-alive
    # connections, so the server threads serving them end and close their database connections (else
    # PostgreSQL cannot drop the test database). The upstream client's own connections stay open: the
    # emulator's threads hold no database connection, so they are not waited for long.
    gc.collect()
    deadline = time.monotonic() + 2
    for thread in threading.enumerate():
        if thread.name.endswith("(process_request_thread)"):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


@pytest.fixture
def real_signatures(live_api, x402_payer, committed_db):
    """A schema-valid PAYMENT-SIGNATURE on a tool call becomes one that pays for that call."""
    # committed_db first: after an earlier transactional test's flush, it is what brings the catalog back.
    # Read here: the engine's threads must not open database connections of their own.
    required = {service.id: encode_payment_required_header(challenge.x402_payment_required(service))
                for service in Service.objects.select_related("pricing_policy")}

    def before_call(context, case, kwargs):
        headers = case.headers or {}
        if (case.path.startswith(TOOLS) and "PAYMENT-SIGNATURE" in headers and case.meta is not None
                and case.meta.generation.mode.is_positive):
            headers["PAYMENT-SIGNATURE"] = x402_payer.header(required[case.path.removeprefix(TOOLS)])

    GLOBAL_HOOK_DISPATCHER.register_hook_with_name(before_call, "before_call")
    yield
    GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def _failure(label: str, node) -> str:
    failure, curl = node.failure_info.failure, node.failure_info.code_sample
    # A signed payment is 4 KB of base64: the reader needs to know it was there, not what it said.
    curl = re.sub(r"(PAYMENT-SIGNATURE: )[A-Za-z0-9+/=]{200,}", r"\1<signed payment>", curl)
    return f"{label}: {node.name}: {failure.title}\n{failure.message}\n{curl}"


def _run(url: str) -> list[str]:
    """Every failed check and engine error of one run (the same failure once)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG))
    problems = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for nodes in event.recorder.checks.values():
                problems += [_failure(event.label, node) for node in nodes if node.failure_info is not None]
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            problems += [f"{failure.operation}: {failure.title}\n{failure.message}" for failure in event.failures]
    return list(dict.fromkeys(problems))


@pytest.mark.usefixtures("real_signatures")
def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(live_api):
    problems = _run(live_api)

    assert not problems, "\n\n".join(problems)
    # The run reached the upstream: paid calls were made and succeeded.
    assert ToolCall.objects.filter(outcome=ToolCall.Outcome.SUCCEEDED).exists()

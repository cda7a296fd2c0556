"""What one health check of one service sends upstream and what its answer means.

The free probe (SPEC, Health and quality) sends the service's action without
its required parameter, through the real upstream client, once. Only the
upstream's own parameter error proves what matters at no cost: the endpoint
answers, our signature and credentials are accepted, and the action is
activated on the account (a gateway refuses auth and subscription before it
looks at parameters). The full check, opt-in per service, sends the example
request and validates the answer against the service's output schema.

Checks run on worker threads: nothing here touches the database.
"""

import re
import time
from dataclasses import dataclass

import jsonschema

from catalog import aliyun_client
from catalog.envelope import envelope
from catalog.models import Service
from health.models import HealthCheckResult, HealthStatus

# A value no upstream accepts as an image URL, for actions whose image parameter is optional.
NOT_A_URL = "server402-health-probe"
_URL_NAME = re.compile(r"(URL|Url|url)[AB]?$")


@dataclass(frozen=True)
class CheckOutcome:
    kind: str
    status: str
    message: str
    latency_ms: int | None = None
    http_status: int | None = None
    upstream_code: str = ""
    upstream_request_id: str = ""


def probe_arguments(service: Service) -> dict | None:
    """The free probe's arguments: none when the action requires a parameter, else a broken URL; None if neither."""
    schema = service.input_schema or {}
    if schema.get("required"):
        return {}
    properties = schema.get("properties") or {}
    url_names = [name for name, spec in properties.items()
                 if (isinstance(spec, dict) and spec.get("format") == "uri") or _URL_NAME.search(name)]
    return {url_names[0]: NOT_A_URL} if url_names else None


def _timed(service: Service, latency_ms: int) -> str:
    return HealthStatus.HEALTHY if latency_ms <= service.sla_max_latency_ms else HealthStatus.DEGRADED


def _slow(service: Service, latency_ms: int) -> str:
    if latency_ms <= service.sla_max_latency_ms:
        return ""
    return f"; slower than the SLA's {service.sla_max_latency_ms} ms"


def _failure(kind: str, error: aliyun_client.UpstreamError) -> CheckOutcome:
    """An upstream answer (or its absence) that means the service does not work now."""
    status = HealthStatus.UNHEALTHY
    if error.kind == "unconfigured":
        status, message = HealthStatus.UNCONFIGURED, error.message
    elif error.kind == "throttled":
        status, message = HealthStatus.DEGRADED, f"the upstream is throttling this account ({error.code})"
    elif error.kind == "auth":
        message = f"the upstream refused our credentials or subscription: {error.code}: {error.message}"
    elif error.kind == "timeout":
        message = "the upstream did not answer in time"
    elif error.kind == "unreachable":
        message = error.message
    elif error.status:
        message = f"the upstream failed with HTTP {error.status}: {error.code + ': ' if error.code else ''}" \
                  f"{error.message}"
    else:
        message = error.message
    return CheckOutcome(kind, status, message[:500], error.latency_ms or None, error.status, error.code,
                        error.request_id)


def probe(service: Service) -> CheckOutcome:
    """The free probe: healthy only when the upstream answers with its own parameter error, within the SLA."""
    kind = HealthCheckResult.Kind.PROBE
    arguments = probe_arguments(service)
    if arguments is None:
        return CheckOutcome(kind, HealthStatus.UNKNOWN, "no free probe: the action has no required or image "
                                                        "parameter to leave out; turn on its full check")
    try:
        answer = aliyun_client.call_service(service, arguments, attempts=1)
    except aliyun_client.UpstreamError as error:
        if error.kind == "client" and error.code:
            return CheckOutcome(kind, _timed(service, error.latency_ms),
                                f"answered with its parameter error {error.code} in {error.latency_ms} ms"
                                f"{_slow(service, error.latency_ms)}",
                                error.latency_ms, error.status, error.code, error.request_id)
        return _failure(kind, error)
    return CheckOutcome(kind, HealthStatus.UNHEALTHY,
                        "unexpected answer: the upstream accepted a request without its required parameter",
                        answer.latency_ms, answer.status, "", answer.request_id)


def full_check(service: Service) -> CheckOutcome:
    """The example request, and its answer (as the caller would get it) checked against the output schema."""
    kind = HealthCheckResult.Kind.FULL
    try:
        answer = aliyun_client.call_service(service, service.example_request or {}, attempts=1)
    except aliyun_client.UpstreamError as error:
        if error.kind == "client":
            return CheckOutcome(kind, HealthStatus.UNHEALTHY,
                                f"the example request was refused: {error.code}: {error.message}"[:500],
                                error.latency_ms, error.status, error.code, error.request_id)
        return _failure(kind, error)
    body = envelope(service.upstream_action, answer.body, answer.request_id)
    problem = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(service.output_schema)(service.output_schema).iter_errors(body))
    if problem is not None:
        where = "/".join(str(part) for part in problem.absolute_path) or "the answer"
        return CheckOutcome(kind, HealthStatus.UNHEALTHY,
                            f"the answer does not match the output schema at {where}: {problem.message}"[:500],
                            answer.latency_ms, answer.status, "", answer.request_id)
    return CheckOutcome(kind, _timed(service, answer.latency_ms),
                        f"the example request answered in {answer.latency_ms} ms, matching the output schema"
                        f"{_slow(service, answer.latency_ms)}",
                        answer.latency_ms, answer.status, "", answer.request_id)


def check(service: Service, *, full: bool) -> CheckOutcome:
    """One check; never raises, so one broken service cannot stop a run."""
    started = time.monotonic()
    try:
        return full_check(service) if full else probe(service)
    except Exception as error:  # a bug or an answer nobody foresaw: stored as the reason
        return CheckOutcome(HealthCheckResult.Kind.FULL if full else HealthCheckResult.Kind.PROBE,
                            HealthStatus.UNKNOWN, f"the check itself failed: {error.__class__.__name__}: {error}"[:500],
                            round((time.monotonic() - started) * 1000))

"""Reads of health and quality data."""


def quality_blocks(service_ids: list[str]) -> dict[str, dict]:
    """Seed 001's `quality` block per service.

    Health checks and call records arrive with the health and tool-call issues;
    until a service has them, its block says so: status unknown, no score, no
    latency, zero counts, rather than numbers nobody measured.
    """
    return {
        service_id: {
            "qualityScore": None,
            "healthStatus": "unknown",
            "healthCheckedAt": None,
            "healthLatencyMs": None,
            "latencyMs": None,
            "successRate": None,
            "callCount": 0,
            "executionCount": 0,
            "successCount": 0,
            "errorCount": 0,
            "paymentRequireds": 0,
            "p50LatencyMs": None,
            "p95LatencyMs": None,
        }
        for service_id in service_ids
    }

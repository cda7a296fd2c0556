"""The answer of a successful tool call (seed 001's exampleResponse shape)."""

ENVELOPE_SCHEMA = {
    "properties": {
        "code": {"type": "string"},
        "content": {"type": "string"},
        "data": {"type": "object"},
        "message": {"type": "string"},
        "requestId": {"type": "string"},
    },
    "required": ["requestId", "data"],
    "type": "object",
}


def envelope(action: str, upstream_body: dict, request_id: str) -> dict:
    """Seed 001's answer: the upstream's Data (or its whole answer) under data.Result."""
    result = upstream_body.get("Data", {k: v for k, v in upstream_body.items() if k != "RequestId"})
    return {"code": "200", "content": "", "data": {"Action": action, "Result": result},
            "message": "success", "requestId": request_id}

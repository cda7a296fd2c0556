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

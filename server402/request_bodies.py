"""Request bodies read against a size limit before anything is done with them.

The declared Content-Length is checked first, so an oversized body is refused
without being read; Django's own DATA_UPLOAD_MAX_MEMORY_SIZE backs that up for
bodies that lie about their length.
"""

from django.core.exceptions import RequestDataTooBig


class BodyRefused(Exception):
    """Why a body was not read: `too_large` or a Content-Length that is not a number."""

    def __init__(self, message: str, *, too_large: bool):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def bounded_body(request, limit: int) -> bytes:
    """The raw body of `request`, or BodyRefused when it is longer than `limit` bytes."""
    too_large = BodyRefused(f"request body is too large: at most {limit} bytes", too_large=True)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyRefused("Content-Length is not a number", too_large=False) from None
    if declared > limit:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_large from None
    if len(body) > limit:
        raise too_large
    return body

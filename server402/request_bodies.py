"""Request bodies read against a size limit before anything is done with them.

The declared Content-Length is checked first, so an oversized body is refused
without being read; Django's own DATA_UPLOAD_MAX_MEMORY_SIZE backs that up for
bodies that lie about their length.

A body sent without Content-Length (Transfer-Encoding: chunked) is one Django
does not read at all: it would pass for an empty body. When the server ends
the input stream with the body (gunicorn does, `wsgi.input_terminated`), it is
read here up to one byte past the limit, so a chunked body is accepted like
any other and an oversized one refused as soon as the limit is crossed.
"""

from django.core.exceptions import RequestDataTooBig
from django.http import UnreadablePostError
from gunicorn.http.errors import ParseException

# A client that stops sending its body is cut off by the server's read timeout (gunicorn.conf.py).
STALLED = "the request body stopped arriving before it was complete; nothing was done"
MALFORMED_CHUNKS = "the request body is not valid chunked encoding; nothing was done"


class BodyRefused(Exception):
    """Why a body was not read: `too_large`, a Content-Length that is not a number, or a body that stalled."""

    def __init__(self, message: str, *, too_large: bool):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def bounded_body(request, limit: int) -> bytes:
    """The raw body of `request`, or BodyRefused when it is longer than `limit` bytes."""
    too_large = BodyRefused(f"request body is too large: at most {limit} bytes", too_large=True)
    if not request.META.get("CONTENT_LENGTH") and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return _chunked_body(request, limit, too_large)
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
    except UnreadablePostError:
        raise BodyRefused(STALLED, too_large=False) from None
    if len(body) > limit:
        raise too_large
    return body


def _chunked_body(request, limit: int, too_large: BodyRefused) -> bytes:
    if not request.META.get("wsgi.input_terminated"):
        # Reading on would wait for an end the server never signals.
        raise BodyRefused("a body sent without Content-Length cannot be read by this server: send Content-Length",
                          too_large=False)
    stream = request.META["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        try:
            chunk = stream.read(min(65_536, limit + 1 - size))
        except OSError:
            raise BodyRefused(STALLED, too_large=False) from None
        except ParseException:
            # gunicorn decodes the chunks as they are read: a bad chunk size or terminator is the client's error.
            raise BodyRefused(MALFORMED_CHUNKS, too_large=False) from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large
    return b"".join(chunks)

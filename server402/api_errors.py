"""One error shape for every API answer: {"error": "...", ...details}.

Seed 001's errorExamples answer with a single `error` sentence; DRF's default
is a dict of field lists. Agents read the sentence, so it comes first.
"""

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApiError(exceptions.APIException):
    """An error with a status, a sentence, optional extra fields and optional response headers (Retry-After)."""

    def __init__(self, message: str, *, status_code: int = status.HTTP_400_BAD_REQUEST, headers: dict | None = None,
                 **extra):
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers or {}
        self.extra = extra


def _first_message(detail) -> tuple[str, str | None]:
    """The first validation message, with the field it belongs to."""
    if isinstance(detail, dict):
        field, messages = next(iter(detail.items()))
        message, inner = _first_message(messages)
        field = inner or field
        # Our own messages already name their field ("limit must be ..."); DRF's do not.
        named = field == "non_field_errors" or message.startswith(f"{field} ")
        return (message if named else f"{field}: {message}"), field
    if isinstance(detail, list):
        return _first_message(detail[0])
    return str(detail), None


def validation_error_body(detail) -> dict:
    """A serializer's errors as the API answers them: the first sentence, its field, then every detail."""
    message, field = _first_message(detail)
    return {"error": message, "field": field, "details": detail}


def exception_handler(exc, context):
    if isinstance(exc, ApiError):
        return Response({"error": str(exc.detail), **exc.extra}, status=exc.status_code, headers=exc.headers)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_error_body(exc.detail)
    else:
        response.data = {"error": str(exc.detail)}
    return response

"""The API key a request presents, for the API views of every app."""

from rest_framework import status

from payments.models import ApiKey
from payments.pipeline import API_KEY_REQUIRED
from payments.selectors import ApiKeyRejected, api_key_authenticate, api_key_presented
from server402.api_errors import ApiError


def request_api_key(request, *, required: bool) -> ApiKey | None:
    """The active key the request carries, None without one; a 401 ApiError for a bad, revoked or missing one."""
    presented = api_key_presented(request.headers)
    if presented is None:
        if required:
            raise ApiError(API_KEY_REQUIRED, status_code=status.HTTP_401_UNAUTHORIZED)
        return None
    try:
        return api_key_authenticate(presented)
    except ApiKeyRejected as rejected:
        raise ApiError(rejected.reason, status_code=status.HTTP_401_UNAUTHORIZED) from None

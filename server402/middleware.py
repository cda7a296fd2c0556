from django.conf import settings


def mode_header(get_response):
    """Every answer says which mode produced it, so a sandbox result never passes for a live one."""

    def middleware(request):
        response = get_response(request)
        response["X-Server402-Mode"] = settings.SERVER402_MODE
        return response

    return middleware

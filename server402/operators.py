"""Who may use the dashboard: signed-in operators read, staff write.

Every dashboard view is wrapped in `dashboard_view`. An anonymous visitor (or
one whose session expired) goes to the login page and comes back after it; an
htmx request is told to do the same for the whole page (HX-Redirect) instead of
swapping a login form into a table cell. A signed-in user who is not staff may
look, and gets 403 on every write.
"""

from functools import wraps
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import resolve_url

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _back_to(request) -> str:
    # htmx sends the page the user is on; the fragment's own URL is not a page to come back to.
    current = request.htmx.current_url if request.htmx else None
    if current:
        parts = urlsplit(current)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return request.get_full_path()


def dashboard_view(view):
    """Sign-in for every request, staff for every write (POST, PUT, PATCH, DELETE)."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            if request.htmx:
                login = resolve_url(settings.LOGIN_URL)
                response = HttpResponse(status=204)
                response["HX-Redirect"] = redirect_to_login(_back_to(request), login).url
                return response
            return redirect_to_login(request.get_full_path())
        if request.method not in SAFE_METHODS and not user.is_staff:
            raise PermissionDenied("Only staff operators may change the dashboard's data.")
        return view(request, *args, **kwargs)

    return wrapped

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
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _back_to(request) -> str:
    """The page to come back to after signing in: never a fragment, never a POST-only URL, never off-site.

    htmx sends the page the user is on; a form's POST came from its Referer; both
    are headers a client writes, so only a same-host value is taken, as a path.
    """
    if request.htmx:
        candidate = request.htmx.current_url
    elif request.method not in SAFE_METHODS:
        candidate = request.headers.get("Referer")
    else:
        return request.get_full_path()
    if candidate and url_has_allowed_host_and_scheme(candidate, allowed_hosts={request.get_host()}):
        parts = urlsplit(candidate)
        if parts.path.startswith("/"):
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return resolve_url(settings.LOGIN_REDIRECT_URL)


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
            return redirect_to_login(_back_to(request))
        if request.method not in SAFE_METHODS and not user.is_staff:
            raise PermissionDenied("Only staff operators may change the dashboard's data.")
        response = view(request, *args, **kwargs)
        # The same URL answers a page or one of its partials: caches must keep them apart.
        patch_vary_headers(response, ["HX-Request"])
        return response

    return wrapped


def page_or_partial(request, template: str, partial: str) -> str:
    """The whole page, or only `partial` of it for htmx; a history restore gets the page.

    htmx asks for the whole page when restoring history it no longer holds (Back
    after many swaps): answering with a fragment would leave a bare table.
    """
    if request.htmx and not request.htmx.history_restore_request:
        return f"{template}#{partial}"
    return template

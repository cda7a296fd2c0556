"""Dashboard pages of the payments app: API keys (with their audit log) and the payments ledger.

Each view parses a form, calls one service or selector and renders its one
template: the whole page, or the page's partial when htmx asks. Writes answer a
plain form post with a redirect (so a reload does not repeat them), except the
two that show a secret, which is rendered in the POST answer itself, marked
no-store, and kept nowhere.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_http_methods, require_POST

from jobs.selectors import jobs_recent
from payments import selectors, services
from payments.forms import (
    ApiKeyCreateForm,
    ApiKeySettingsForm,
    ConfirmForm,
    KeysPageForm,
    PaymentFilterForm,
    TopUpForm,
)
from payments.models import cents_as_dollars
from server402.operators import dashboard_view, page_or_partial

KEYS_TEMPLATE = "dashboard/api_keys.html"
KEY_TEMPLATE = "dashboard/api_key.html"


def _render(request, template: str, partial: str, context: dict, *, refused: bool = False,
            secret: bool = False):
    """The page, or its partial for htmx; 400 for a refused form, no-store for a page showing a secret."""
    template = page_or_partial(request, template, partial)
    # base.html tells htmx to swap 4xx answers too, so a refusal keeps its status either way.
    response = render(request, template, context, status=400 if refused else 200)
    if secret:
        patch_cache_control(response, no_store=True, private=True)
    return response


def _keys_context(form, *, page_form=None, created=None) -> dict:
    before = page_form.cleaned_data["before"] if page_form is not None and page_form.is_valid() else None
    return {"form": form, "page_form": page_form, "page": selectors.api_keys_page(before=before),
            "created": created}


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def api_keys(request):
    """The keys, and the form that creates one (its secret shown in the answer, once)."""
    if request.method == "POST":
        form = ApiKeyCreateForm(request.POST)
        if form.is_valid():
            created = services.api_key_create(**form.settings(), actor=request.user)
            return _render(request, KEYS_TEMPLATE, "keys", _keys_context(ApiKeyCreateForm(), created=created),
                           secret=True)
        return _render(request, KEYS_TEMPLATE, "keys", _keys_context(form), refused=True)
    context = _keys_context(ApiKeyCreateForm(), page_form=KeysPageForm(request.GET))
    return _render(request, KEYS_TEMPLATE, "keys", context)


def _key(key_id: int):
    api_key = selectors.api_key_for_dashboard(key_id)
    if api_key is None:
        raise Http404("No such API key.")
    return api_key


def _key_context(api_key, *, settings_form=None, top_up_form=None, rotate_form=None, new_secret=None) -> dict:
    return {
        "key": api_key,
        "settings_form": settings_form or ApiKeySettingsForm.for_key(api_key),
        "top_up_form": top_up_form or TopUpForm(),
        "rotate_form": rotate_form or ConfirmForm(prefix="rotate"),
        "new_secret": new_secret,
        "usage": selectors.api_key_usage(api_key),
        "payments": selectors.api_key_payments_latest(api_key),
        "jobs": jobs_recent(api_key=api_key),
        "events": selectors.api_key_events(api_key),
    }


def _key_written(request, key_id: int, notice: str):
    """After a write: a fresh page for htmx, a redirect (and the notice as a message) for a plain form."""
    if request.htmx:
        context = _key_context(_key(key_id))
        context["notice"] = notice
        return _render(request, KEY_TEMPLATE, "key", context)
    messages.success(request, notice)
    return redirect("dashboard-key", key_id=key_id)


@dashboard_view
@require_http_methods(["GET", "HEAD", "POST"])
def api_key_detail(request, key_id):
    """One key: its settings (POST saves them), top-up, rotate, revoke, usage, payments, jobs and audit log."""
    api_key = _key(key_id)
    if request.method == "POST":
        form = ApiKeySettingsForm(request.POST)
        if form.is_valid():
            services.api_key_update(api_key=api_key, actor=request.user, **form.settings())
            return _key_written(request, key_id, "Settings saved.")
        return _render(request, KEY_TEMPLATE, "key", _key_context(api_key, settings_form=form), refused=True)
    return _render(request, KEY_TEMPLATE, "key", _key_context(api_key))


@dashboard_view
@require_POST
def api_key_top_up(request, key_id):
    api_key = _key(key_id)
    form = TopUpForm(request.POST)
    if form.is_valid():
        try:
            services.api_key_top_up(api_key=api_key, amount_cents=form.cleaned_data["amount"], actor=request.user)
        except services.ApiKeyRevoked as refusal:
            form.add_error(None, f"Refused: {refusal}.")
        else:
            added = cents_as_dollars(form.cleaned_data["amount"])
            return _key_written(request, key_id, f"Added {added} USD; the balance is {api_key.balance_dollars} USD.")
    return _render(request, KEY_TEMPLATE, "key", _key_context(api_key, top_up_form=form), refused=True)


@dashboard_view
@require_POST
def api_key_revoke(request, key_id):
    api_key = _key(key_id)
    services.api_key_revoke(api_key=api_key, actor=request.user)
    return _key_written(request, key_id, f"{api_key.client_id} is revoked: requests with it now get 401.")


@dashboard_view
@require_POST
def api_key_rotate(request, key_id):
    """A new secret, shown in this answer only; the old secret is refused from now on."""
    api_key = _key(key_id)
    form = ConfirmForm(request.POST, prefix="rotate")
    try:
        rotated = services.api_key_rotate(api_key=api_key, actor=request.user)
    except services.ApiKeyRevoked as refusal:
        form.add_error(None, f"Refused: {refusal}.")
        return _render(request, KEY_TEMPLATE, "key", _key_context(api_key, rotate_form=form), refused=True)
    context = _key_context(_key(key_id), new_secret=rotated.secret)
    context["notice"] = "Secret rotated: the previous one no longer authenticates."
    return _render(request, KEY_TEMPLATE, "key", context, secret=True)


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def payments_ledger(request):
    """Payments newest first, filtered; a bad filter is shown on the form, with no rows, never a 500."""
    form = PaymentFilterForm(request.GET)
    page = selectors.payments_ledger(**form.filters()) if form.is_valid() else None
    return _render(request, "dashboard/payments.html", "ledger", {"form": form, "page": page})


@dashboard_view
@require_http_methods(["GET", "HEAD"])
def payment_detail(request, payment_id):
    """A payment's price snapshot, state, calls and x402 receipts; never its token."""
    detail = selectors.payment_detail(payment_id)
    if detail is None:
        raise Http404("No such payment.")
    return render(request, "dashboard/payment.html", {"detail": detail, "payment": detail.payment})

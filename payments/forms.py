"""Dashboard forms of the payments app: API key settings, top-ups, the ledger's filters.

Forms only parse and check what an operator typed; the services write.
"""

from datetime import date
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from catalog.models import Service
from payments.selectors import PAYMENT_METHODS, PAYMENT_STATES, Cursor, api_key_ids_for_client

MAX_AMOUNT_DOLLARS = Decimal("100000")
MAX_RATE_LIMIT_PER_MINUTE = 100_000
MAX_DAILY_QUOTA = 100_000_000


class DollarsField(forms.DecimalField):
    """US dollars with at most two decimals ("5", "5.00"), cleaned to whole cents (500)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("widget", forms.NumberInput(attrs={"step": "0.01", "min": "0.01"}))
        super().__init__(max_digits=None, decimal_places=2, **kwargs)

    def validate(self, value):
        super().validate(value)
        if value is None:
            return
        if value <= 0:
            raise ValidationError("Enter an amount greater than zero.", code="min_value")
        if value > MAX_AMOUNT_DOLLARS:
            raise ValidationError(f"Enter at most {MAX_AMOUNT_DOLLARS:,} USD at a time.", code="max_value")

    def clean(self, value):
        dollars = super().clean(value)
        return None if dollars is None else int(dollars * 100)


def _limit_field(label: str, maximum: int, help_text: str) -> forms.IntegerField:
    return forms.IntegerField(label=label, required=False, min_value=1, max_value=maximum,
                              help_text=f"{help_text} Empty: none.")


class ApiKeySettingsForm(forms.Form):
    """What an operator sets on a key: label, allow-list, rate limit, daily quota."""

    ACCESS_ALL, ACCESS_LISTED = "all", "listed"

    label = forms.CharField(max_length=200, help_text="Who or what holds the key; shown in the ledger.")
    access = forms.ChoiceField(
        label="Services", widget=forms.RadioSelect, initial=ACCESS_ALL,
        choices=[(ACCESS_ALL, "Every service"), (ACCESS_LISTED, "Only the services selected below")],
    )
    services = forms.ModelMultipleChoiceField(
        label="Allow-list", queryset=Service.objects.only("pk").order_by("pk"), to_field_name="id", required=False,
        widget=forms.CheckboxSelectMultiple, error_messages={"invalid_choice": "Unknown service: %(value)s."},
        help_text="Used when the key is limited to some services.",
    )
    rate_limit_per_minute = _limit_field("Rate limit (calls per minute)", MAX_RATE_LIMIT_PER_MINUTE,
                                         f"1 to {MAX_RATE_LIMIT_PER_MINUTE:,}.")
    daily_quota = _limit_field("Daily quota (calls per UTC day)", MAX_DAILY_QUOTA, f"1 to {MAX_DAILY_QUOTA:,}.")

    @classmethod
    def for_key(cls, api_key, **kwargs):
        """The form filled in with `api_key`'s settings (its allow-list prefetched)."""
        listed = [service.pk for service in api_key.allowed_services.all()]
        access = cls.ACCESS_ALL if api_key.allow_all_services or not listed else cls.ACCESS_LISTED
        initial = {"label": api_key.label, "access": access, "services": listed,
                   "rate_limit_per_minute": api_key.rate_limit_per_minute, "daily_quota": api_key.daily_quota}
        return cls(initial=initial, **kwargs)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("access") == self.ACCESS_ALL:
            cleaned["services"] = []
        elif cleaned.get("access") == self.ACCESS_LISTED and "services" in cleaned and not cleaned["services"]:
            # An empty allow-list would mean every service: the opposite of what was asked.
            self.add_error("services", "Select at least one service, or allow every service.")
        return cleaned

    def settings(self) -> dict:
        """The cleaned values as the api_key_* services take them."""
        data = self.cleaned_data
        return {"label": data["label"], "allowed_services": list(data["services"]),
                "rate_limit_per_minute": data["rate_limit_per_minute"], "daily_quota": data["daily_quota"]}


class ApiKeyCreateForm(ApiKeySettingsForm):
    opening_balance = DollarsField(label="Opening balance (USD)", required=False,
                                   help_text="Prepaid balance to start with, e.g. 5.00. Empty: none.")

    def settings(self) -> dict:
        return {**super().settings(), "balance_cents": self.cleaned_data["opening_balance"] or 0}


class TopUpForm(forms.Form):
    amount = DollarsField(label="Amount (USD)", help_text="Added to the prepaid balance, e.g. 5.00.")


class ConfirmForm(forms.Form):
    """A write with nothing to fill in (revoke, rotate): it carries the refusal, if any, like any form."""


LAST_FILTER_DATE = date(9999, 12, 30)


class ServiceAndKeyFilterForm(forms.Form):
    """What the dashboard's lists filter by: a service, and an API key by client id or label."""

    service = forms.ChoiceField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One query serves both the choices rendered and the check of the value sent.
        self.fields["service"].choices = [("", "any"), *((pk, pk) for pk in
                                                         Service.objects.order_by("pk").values_list("pk", flat=True))]

    @staticmethod
    def key_ids(client: str) -> list[int] | None:
        """The ids of the keys a client id or label names; None for no filter."""
        if not client:
            return None
        ids = api_key_ids_for_client(client)
        if not ids:
            raise ValidationError("No API key has this client id or label.")
        return ids


class PaymentFilterForm(ServiceAndKeyFilterForm):
    """The ledger's filters, read from the query string; every field is optional."""

    field_order = ["status", "service", "method", "client", "created_from", "created_to", "before"]
    status = forms.ChoiceField(required=False, choices=[("", "any"), *((s, s) for s in PAYMENT_STATES)])
    method = forms.ChoiceField(required=False, choices=[("", "any"), *((m, m) for m in PAYMENT_METHODS)])
    client = forms.CharField(required=False, max_length=200, strip=True,
                             widget=forms.TextInput(attrs={"placeholder": "key_... or label"}))
    # Bounded away from date.max: the ledger filters on the day after `created_to`.
    created_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                   validators=[MaxValueValidator(LAST_FILTER_DATE)])
    created_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}),
                                 validators=[MaxValueValidator(LAST_FILTER_DATE)])
    before = forms.CharField(required=False, max_length=120, widget=forms.HiddenInput)

    def clean_client(self):
        return self.key_ids(self.cleaned_data["client"])

    def clean_before(self):
        text = self.cleaned_data["before"]
        if not text:
            return None
        cursor = Cursor.parse(text)
        if cursor is None or not str(cursor.pk).startswith("pay_"):
            raise ValidationError("This page link is not valid; start again from the newest payments.")
        return cursor

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("created_from"), cleaned.get("created_to")
        if start and end and start > end:
            self.add_error("created_to", "The end date is before the start date.")
        return cleaned

    def filters(self) -> dict:
        """The cleaned values as payments_ledger takes them."""
        data = self.cleaned_data
        return {"state": data["status"] or None, "service_id": data["service"] or None,
                "method": data["method"] or None, "client_ids": data["client"],
                "created_from": data["created_from"], "created_to": data["created_to"], "before": data["before"]}


class KeysPageForm(forms.Form):
    """The keys list's one parameter: where the page starts."""

    before = forms.CharField(required=False, max_length=120)

    def clean_before(self):
        text = self.cleaned_data["before"]
        if not text:
            return None
        cursor = Cursor.parse(text, pk_type=int)
        if cursor is None:
            raise ValidationError("This page link is not valid; start again from the newest keys.")
        return cursor

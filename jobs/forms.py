"""Dashboard form of the jobs app: the jobs list's filters. It only parses what an operator asked for."""

from django import forms
from django.core.exceptions import ValidationError

from jobs.models import Job
from jobs.selectors import JOB_ID
from payments.forms import ServiceAndKeyFilterForm
from payments.selectors import Cursor


class JobFilterForm(ServiceAndKeyFilterForm):
    """The jobs list's filters, read from the query string; every field is optional."""

    key = forms.CharField(label="API key", required=False, max_length=200, strip=True,
                          widget=forms.TextInput(attrs={"placeholder": "key_... or label"}))
    status = forms.ChoiceField(required=False, choices=[("", "any"), *Job.Status.choices])
    before = forms.CharField(required=False, max_length=120, widget=forms.HiddenInput)

    def clean_key(self):
        return self.key_ids(self.cleaned_data["key"])

    def clean_before(self):
        text = self.cleaned_data["before"]
        if not text:
            return None
        cursor = Cursor.parse(text)
        if cursor is None or not JOB_ID.fullmatch(str(cursor.pk)):
            raise ValidationError("This page link is not valid; start again from the newest jobs.")
        return cursor

    def filters(self) -> dict:
        """The cleaned values as jobs_dashboard_page takes them."""
        data = self.cleaned_data
        return {"service_id": data["service"] or None, "api_key_ids": data["key"], "status": data["status"] or None,
                "before": data["before"]}

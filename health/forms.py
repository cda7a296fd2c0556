from django import forms
from django.conf import settings

from catalog.models import Service


class HealthRunForm(forms.Form):
    """Start a run: every published service, or the chosen ones."""

    services = forms.ModelMultipleChoiceField(
        queryset=Service.objects.filter(state=Service.State.PUBLISHED).order_by("id"), required=False,
        to_field_name="id", widget=forms.CheckboxSelectMultiple,
        help_text="None chosen: every published service.",
    )
    concurrency = forms.IntegerField(min_value=1, max_value=settings.HEALTH_CHECK_MAX_CONCURRENCY,
                                     initial=settings.HEALTH_CHECK_CONCURRENCY,
                                     help_text="Services checked at once.")
    full = forms.BooleanField(required=False, label="Full check",
                              help_text="Send each example request and validate the answer (billed in live mode).")

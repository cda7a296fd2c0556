from decimal import Decimal

from django import forms

from catalog.models import PricingPolicy, Service
from health.models import HealthStatus

MAX_KEYWORDS = 50
MAX_KEYWORD_LENGTH = 60


class ServiceFilterForm(forms.Form):
    """The services table's search box and filters (a GET form: every field optional)."""

    q = forms.CharField(required=False, max_length=200, label="Search",
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "id, name, keyword..."}))
    category = forms.ChoiceField(required=False)
    state = forms.ChoiceField(required=False, choices=[("", "any state"), *Service.State.choices])
    health = forms.ChoiceField(required=False, choices=[("", "any health"), *HealthStatus.choices])

    def __init__(self, *args, categories: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = [("", "any category"), *((c, c) for c in categories)]


class KeywordsField(forms.CharField):
    """Keywords as one comma-separated line; stored as a list."""

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        text = super().to_python(value)
        return list(dict.fromkeys(word.strip() for word in text.split(",") if word.strip()))

    def validate(self, value):
        super().validate(value)
        if len(value) > MAX_KEYWORDS:
            raise forms.ValidationError(f"At most {MAX_KEYWORDS} keywords, not {len(value)}.")
        too_long = [word for word in value if len(word) > MAX_KEYWORD_LENGTH]
        if too_long:
            raise forms.ValidationError(f"Keywords are at most {MAX_KEYWORD_LENGTH} characters: {too_long[0][:80]!r}.")


class ServiceForm(forms.ModelForm):
    """What an operator may edit of a service; its upstream binding and schemas come from the catalog import."""

    # The model's text fields have no length limit; a page and a model's prompt do.
    description = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))
    description_for_model = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 4}),
                                            help_text="What MCP clients and the catalog tell models about the tool.")
    keywords = KeywordsField(required=False, help_text="Comma-separated; search matches them.")

    class Meta:
        model = Service
        fields = ["name", "description", "description_for_model", "keywords", "state", "enabled", "pricing_policy"]
        help_texts = {"enabled": "A disabled service stays listed here but agents cannot find or call it.",
                      "state": "Only published services are in the catalog."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pricing_policy"].empty_label = None


class PricingPolicyForm(forms.ModelForm):
    """A policy's price in dollars (stored in cents) and its rules. The id is chosen once, at creation."""

    max_calls = forms.IntegerField(label="Calls per payment", min_value=1, max_value=10_000,
                                   help_text="How many calls one payment (one token) buys.")
    price = forms.DecimalField(
        label="Price (USD)", min_value=Decimal("0.01"), max_value=Decimal("10000"), decimal_places=2, max_digits=7,
        help_text="What one payment costs, in US dollars (paid in USDC), e.g. 0.20.",
    )

    class Meta:
        model = PricingPolicy
        fields = ["id", "name", "max_calls", "settle_mode", "allow_reuse", "bind_client", "require_api_key"]
        labels = {"id": "Policy id"}
        help_texts = {"id": "Letters, digits, hyphens and underscores; cannot be changed later."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["price"].initial = Decimal(self.instance.amount_cents) / 100
            del self.fields["id"]

    @property
    def amount_cents(self) -> int:
        return int(self.cleaned_data["price"] * 100)

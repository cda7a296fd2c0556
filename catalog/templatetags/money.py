from django import template

register = template.Library()


@register.filter
def money(cents, currency: str = "USD") -> str:
    """Cents as every page writes a price: "USD 0.20" (as PricingPolicy.price_label)."""
    if cents is None or cents == "":
        return "-"
    return f"{currency} {int(cents) / 100:,.2f}"

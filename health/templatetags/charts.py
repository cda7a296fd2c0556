"""Inline SVG charts: drawn on the server, so pages need no chart library and fetch nothing."""

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()


def _points(values: list[int | None], width: int, height: int, top: float) -> list[tuple[float, float]]:
    step = width / max(len(values) - 1, 1)
    return [(round(i * step, 1), round(height - 1 - (value / top) * (height - 2), 1))
            for i, value in enumerate(values) if value is not None]


@register.simple_tag
def sparkline(values: list[int | None], width: int = 120, height: int = 24):
    """A latency line over the window (hours without samples are skipped), labelled for screen readers."""
    known = [value for value in values if value is not None]
    if not known:
        return mark_safe('<span class="muted" title="No latency samples in the window">no data</span>')
    top = max(known) or 1
    points = _points(values, width, height, top)
    label = f"median latency per hour, {min(known)} to {max(known)} ms"
    # A line needs two hours with samples; the latest hour is also marked, so one sample still shows.
    last_x, last_y = points[-1]
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<title>{}</title><polyline points="{}"/><circle cx="{}" cy="{}" r="2"/></svg>',
        width, height, width, height, label, label, " ".join(f"{x},{y}" for x, y in points), last_x, last_y,
    )


@register.simple_tag
def health_chart(results, width: int = 720, height: int = 120, slot_count: int = 60):
    """One bar per check, oldest on the left: height is latency, colour is status; failures stand full height."""
    if not results:
        return mark_safe('<p class="muted">No checks yet.</p>')
    top = max((result.latency_ms or 0) for result in results) or 1
    # Slots for a full history, newest on the right, so a few checks are a few thin bars, not one wide one.
    slots = max(len(results), slot_count)
    bar = width / slots
    offset = slots - len(results)
    answered = ("healthy", "degraded")

    def bars():
        for i, result in enumerate(results, start=offset):
            size = (result.latency_ms or 0) / top * (height - 4) + 2 if result.status in answered else height
            title = f"{result.checked_at:%Y-%m-%d %H:%M:%S} UTC · {result.status}" + (
                f" · {result.latency_ms} ms" if result.latency_ms is not None else "") + (
                f" · {result.message}" if result.message else "")
            yield (round(i * bar + 1, 1), round(height - size, 1), round(max(bar - 2, 1), 1), round(size, 1),
                   result.status, title)

    rects = format_html_join(
        "", '<rect x="{}" y="{}" width="{}" height="{}" class="{}"><title>{}</title></rect>', bars())
    return format_html(
        '<svg class="chart" width="100%" height="{}" viewBox="0 0 {} {}" preserveAspectRatio="none" role="img" '
        'aria-label="Last {} health checks, newest on the right; bar height is latency, failures full height">'
        '{}</svg>', height, width, height, len(results), rects)

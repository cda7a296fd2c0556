"""Operator-written text in the markdown documents (service pages, llms.txt): read as text, never as markup.

The documents are rendered with autoescape off (HTML entities would be noise
to an agent reading markdown), so the fields an operator writes go through
this filter: `&`, `<` and `>` become entities, which any markdown renderer
shows as the characters themselves, so a `<script>` in a name is text there
too; `[` and `]` are escaped so a name cannot close the link it is the text of.
"""

from django import template

register = template.Library()

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]"})


@register.filter
def markdown_text(value) -> str:
    return str(value).translate(_ESCAPES)

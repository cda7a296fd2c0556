"""The `Prefer` request header (RFC 7240): which preferences a request states.

A preference the server does not understand, or cannot parse, is ignored, as
RFC 7240 section 2 asks: a request with a junk Prefer is served as if it had
none, never refused for it.
"""

import re

# preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] ), word = token / quoted-string
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_WORD = rf'(?:{_TOKEN}|"(?:[^"\\]|\\.)*")'
_PARAMETER = rf"{_TOKEN}(?:[ \t]*=[ \t]*{_WORD})?"
_PREFERENCE = re.compile(rf"[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_WORD}))?((?:[ \t]*;(?:[ \t]*{_PARAMETER})?)*)[ \t]*")
# Commas inside quoted strings do not separate preferences.
_ELEMENT = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*")+')
# A header longer than this is not a list of preferences anyone means; it is not read at all.
MAX_LENGTH = 1024


def preferences(header: str | None) -> dict[str, str]:
    """{name (lower case): value ("" for none)} of the well-formed preferences; the first of a name wins."""
    if not header or len(header) > MAX_LENGTH:
        return {}
    stated: dict[str, str] = {}
    for element in _ELEMENT.findall(header):
        match = _PREFERENCE.fullmatch(element)
        if match is None:
            continue
        name, value = match.group(1).lower(), match.group(2) or ""
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        stated.setdefault(name, value)
    return stated


def prefers_respond_async(header: str | None) -> bool:
    """Whether the request asks for an asynchronous answer: `respond-async`, which takes no value."""
    stated = preferences(header)
    return "respond-async" in stated and stated["respond-async"] == ""

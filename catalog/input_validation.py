"""A tool call's arguments checked against its service's input schema, in seed 001's words.

Seed 001's errorExamples set the tone: "ImageURL is required", "ImageURL must
be a valid http or https URL". Every refusal names the parameter and what is
wrong with it, and only one is reported: the first, in a stable order.

A URL parameter is handed to the upstream, which downloads it: one that names
this side of the internet (a loopback, private or link-local address such as
the 169.254.169.254 metadata service, or localhost) is refused here, before
anything is paid. Only what the URL itself says is judged: names are never
resolved, so a public name that resolves to a private address is the
upstream's to refuse.
"""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

MAX_URL_LENGTH = 2048
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "an array", "object": "an object", "null": "null"}

_formats = FormatChecker(formats=())
# What inet_aton reads as an IPv4 address besides the dotted quad: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_not_public(host: str) -> str | None:
    """Why a URL's host is not somewhere on the public internet (a phrase), or None when it may be."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost"
    address = _literal_address(host)
    if address is None:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "not a public address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or not address.is_global:
        return "not a public address"
    return None


def _http_url_parts(value: str):
    """The parts of an http(s) URL with a host, or None when `value` is not one."""
    if len(value) > MAX_URL_LENGTH or any(c.isspace() for c in value):
        return None
    try:
        parts = urlsplit(value)
        hostname = parts.hostname
    except ValueError:
        return None
    return parts if parts.scheme in ("http", "https") and hostname else None


@_formats.checks("uri")
def _http_url(value) -> bool:
    if not isinstance(value, str):
        return True
    parts = _http_url_parts(value)
    return parts is not None and host_not_public(parts.hostname) is None


def _where(path) -> str:
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _message(error) -> str:
    where = _where(error.absolute_path)
    validator, value = error.validator, error.validator_value
    if validator == "required":
        missing = next(name for name in value if name not in error.instance)
        return f"{where + '.' if where else ''}{missing} is required"
    if validator == "additionalProperties":
        allowed = sorted((error.schema.get("properties") or {}).keys())
        unknown = sorted(set(error.instance) - set(allowed))
        expected = f"; this service takes {', '.join(allowed)}" if allowed else "; this service takes no parameters"
        return f"unknown parameter {', '.join(unknown)}{expected}"
    if validator == "format" and value == "uri":
        if isinstance(error.instance, str) and len(error.instance) > MAX_URL_LENGTH:
            return f"{where} must be at most {MAX_URL_LENGTH} characters"
        parts = _http_url_parts(error.instance) if isinstance(error.instance, str) else None
        if parts is not None:
            return (f"{where} must be a public http or https URL: {parts.hostname} is "
                    f"{host_not_public(parts.hostname)}")
        return f"{where} must be a valid http or https URL"
    if validator == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"{where} must be {' or '.join(_TYPE_NAMES.get(kind, kind) for kind in kinds)}"
    if validator == "enum":
        return f"{where} must be one of {', '.join(map(str, value))}"
    if validator in ("minimum", "exclusiveMinimum"):
        return f"{where} must be at least {value}"
    if validator in ("maximum", "exclusiveMaximum"):
        return f"{where} must be at most {value}"
    if validator == "maxLength":
        return f"{where} must be at most {value} characters"
    if validator == "minLength":
        return f"{where} must not be empty" if value == 1 else f"{where} must be at least {value} characters"
    if validator == "maxItems":
        return f"{where} must have at most {value} items"
    if validator == "minItems":
        return f"{where} must have at least {value} items"
    return f"{where or 'input'} is not valid: {error.message}"


def _closed(schema: dict) -> dict:
    # Unknown top-level keys are refused: they would be silently dropped upstream.
    return schema if "additionalProperties" in schema else {**schema, "additionalProperties": False}


_validators: dict[str, tuple[object, Draft202012Validator]] = {}


def _validator(key: str, schema: dict) -> Draft202012Validator:
    cached = _validators.get(key)
    if cached is None or cached[0] != schema:
        cached = (schema, Draft202012Validator(_closed(schema), format_checker=_formats))
        _validators[key] = cached
    return cached[1]


def _parameter(error) -> str | None:
    """The top-level parameter an error is about (None for unknown parameters)."""
    if error.validator == "required" and not error.absolute_path:
        return next(name for name in error.validator_value if name not in error.instance)
    return str(error.absolute_path[0]) if error.absolute_path else None


def input_problems(schema: dict, arguments: dict, *, cache_key: str = "") -> list[tuple[str, str | None]]:
    """Every problem with `arguments` as (message, parameter), in schema order; empty when valid.

    Unknown parameters come first, then the required parameters in the order the
    schema requires them, then the optional ones by name: the first message is
    about the first thing to fix.
    """
    validator = _validator(cache_key, schema) if cache_key else Draft202012Validator(
        _closed(schema), format_checker=_formats)
    # `required` is a list, so its order survives PostgreSQL's jsonb (which reorders object keys).
    names = [*schema.get("required", []), *sorted(schema.get("properties") or {})]
    order = {name: index for index, name in reversed(list(enumerate(names)))}
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (
        order.get(_parameter(e), -1), len(e.absolute_path), _where(e.absolute_path), e.validator))
    return [(_message(error), _where(error.absolute_path) or _parameter(error)) for error in errors]

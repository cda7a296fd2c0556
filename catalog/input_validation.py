"""A tool call's arguments checked against its service's input schema, in seed 001's words.

Seed 001's errorExamples set the tone: "ImageURL is required", "ImageURL must
be a valid http or https URL". Every refusal names the parameter and what is
wrong with it, and only one is reported: the first, in a stable order.
"""

from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

MAX_URL_LENGTH = 2048
_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "an array", "object": "an object", "null": "null"}

_formats = FormatChecker(formats=())


@_formats.checks("uri")
def _http_url(value) -> bool:
    if not isinstance(value, str):
        return True
    if len(value) > MAX_URL_LENGTH or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


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

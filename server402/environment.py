"""Typed readers for environment variables.

Each reader fails loudly: a value that is present but malformed raises
ImproperlyConfigured naming the variable, the value and what was expected, so a
typo in production stops start-up instead of quietly becoming a default.
"""

import os
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = _raw(name)
    if value:
        return value
    if required:
        raise ImproperlyConfigured(f"{name} is not set; it is required.")
    return default


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true/false, yes/no, on/off or 1/0.")


def _env_number(name, default, convert, kind, minimum, maximum):
    value = _raw(name)
    if not value:
        return default
    try:
        number = convert(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not {kind}.") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is out of range [{minimum}, {maximum}].")
    return number


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    return _env_number(name, default, int, "a whole number", minimum, maximum)


def env_float(name: str, default: float, *, minimum: float, maximum: float) -> float:
    return _env_number(name, default, float, "a number", minimum, maximum)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return default
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ImproperlyConfigured(f"{name} is set but empty; unset it for the default or list values.")
    return items


def masked(url: str) -> str:
    """A URL fit for an error message: any user and password replaced by ***."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def env_url(name: str, default: str | None = None, *, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    value = _raw(name) or default
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ImproperlyConfigured(f"{name}={masked(value)!r} is not a {'/'.join(schemes)} URL with a host.")
    return value.rstrip("/")


def env_evm_address(name: str, default: str | None = None) -> str | None:
    value = _raw(name) or default
    if value is None:
        return None
    body = value[2:] if value.startswith("0x") else ""
    if len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ImproperlyConfigured(f"{name}={value!r} is not an EVM address (0x followed by 40 hex digits).")
    return value

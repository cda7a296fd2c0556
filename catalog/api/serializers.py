from django.conf import settings
from rest_framework import serializers

from catalog.models import Service
from catalog.selectors import catalog_categories


def _category(value: str) -> str:
    known = catalog_categories()
    if value and value not in known:
        raise serializers.ValidationError(f"unknown category {value!r}; known: {', '.join(sorted(known))}")
    return value


def _limit_messages(maximum: int) -> dict:
    between = f"limit must be between 1 and {maximum}"
    return {"min_value": between, "max_value": between, "invalid": "limit must be a whole number"}


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=True, default="",
        max_length=settings.CATALOG_SEARCH_MAX_QUERY_LENGTH,
        error_messages={"max_length": "q must be at most {max_length} characters"},
    )
    limit = serializers.IntegerField(
        required=False, default=10, min_value=1, max_value=settings.CATALOG_SEARCH_MAX_LIMIT,
        error_messages=_limit_messages(settings.CATALOG_SEARCH_MAX_LIMIT),
    )
    category = serializers.CharField(required=False, allow_blank=True, default="", validators=[_category])


class ServiceListQuerySerializer(serializers.Serializer):
    category = serializers.CharField(required=False, allow_blank=True, default="", validators=[_category])
    state = serializers.ChoiceField(choices=Service.State.choices, required=False, default=Service.State.PUBLISHED)
    limit = serializers.IntegerField(
        required=False, default=100, min_value=1, max_value=500, error_messages=_limit_messages(500)
    )
    offset = serializers.IntegerField(required=False, default=0, min_value=0)


class ServiceReferenceSerializer(serializers.Serializer):
    service_id = serializers.RegexField(
        r"^[a-z0-9][a-z0-9_-]{0,149}$",
        error_messages={"invalid": "malformed service id: use lower-case letters, digits, '-' or '_'"},
    )

from django.conf import settings
from rest_framework import serializers

from catalog.models import SERVICE_REFERENCE_PATTERN, Service
from catalog.selectors import search_categories, service_categories


def _limit_messages(maximum: int) -> dict:
    between = f"limit must be between 1 and {maximum}"
    return {"min_value": between, "max_value": between, "invalid": "limit must be a whole number"}


def _known_category(value: str, known) -> str:
    if value and value not in known:
        raise serializers.ValidationError(
            {"category": f"unknown category {value!r}; known: {', '.join(sorted(known)) or 'none'}"}
        )
    return value


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
    category = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, data):
        _known_category(data["category"], search_categories())
        return data


class ServiceListQuerySerializer(serializers.Serializer):
    category = serializers.CharField(required=False, allow_blank=True, default="")
    state = serializers.ChoiceField(choices=Service.State.choices, required=False, default=Service.State.PUBLISHED)
    limit = serializers.IntegerField(
        required=False, default=100, min_value=1, max_value=500, error_messages=_limit_messages(500)
    )
    offset = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=1_000_000,
        error_messages={"min_value": "offset must be between 0 and 1000000",
                        "max_value": "offset must be between 0 and 1000000"},
    )

    def validate(self, data):
        _known_category(data["category"], service_categories(state=data["state"]))
        return data


class ServiceReferenceSerializer(serializers.Serializer):
    service_id = serializers.RegexField(
        SERVICE_REFERENCE_PATTERN,
        error_messages={"invalid": "malformed service id: use lower-case letters, digits, '-' or '_'"},
    )

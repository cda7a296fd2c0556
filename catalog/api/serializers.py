from collections.abc import Callable, Iterable

from django.conf import settings
from rest_framework import serializers, status

from catalog.models import SERVICE_REFERENCE_PATTERN, Service
from catalog.selectors import search_categories, service_categories
from server402.api_errors import ApiError

DRAFTS_FOR_OPERATORS_ONLY = "only operators can list draft services"


def _limit_messages(maximum: int) -> dict:
    between = f"limit must be between 1 and {maximum}"
    return {"min_value": between, "max_value": between, "invalid": "limit must be a whole number"}


def _known_category(value: str, known) -> str:
    if value and value not in known:
        raise serializers.ValidationError(
            {"category": f"unknown category {value!r}; known: {', '.join(sorted(known)) or 'none'}"}
        )
    return value


class CatalogChoiceField(serializers.CharField):
    """A filter naming something the catalog has (a category): blank for any.

    `documented_choices` gives the values the catalog has now, for the OpenAPI
    document's enum (catalog.openapi); the serializer checks the value itself,
    because what is known can depend on other parameters.
    """

    def __init__(self, *, documented_choices: Callable[[], Iterable[str]], **kwargs):
        self.documented_choices = documented_choices
        super().__init__(required=False, allow_blank=True, default="", **kwargs)


def _published_categories() -> set[str]:
    return service_categories(state=Service.State.PUBLISHED)


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
    category = CatalogChoiceField(documented_choices=search_categories)

    def validate(self, data):
        _known_category(data["category"], search_categories())
        return data


class ServiceListQuerySerializer(serializers.Serializer):
    """The list's filters; `context["operator"]` says whether the caller may list drafts."""

    category = CatalogChoiceField(documented_choices=_published_categories)
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
        # Refused before the category is checked: the refusal must not list the drafts' categories.
        if data["state"] == Service.State.DRAFT and not self.context.get("operator"):
            raise ApiError(DRAFTS_FOR_OPERATORS_ONLY, status_code=status.HTTP_403_FORBIDDEN)
        _known_category(data["category"], service_categories(state=data["state"]))
        return data


class ServiceReferenceSerializer(serializers.Serializer):
    service_id = serializers.RegexField(
        SERVICE_REFERENCE_PATTERN,
        error_messages={"invalid": "malformed service id: use lower-case letters, digits, '-' or '_'"},
    )

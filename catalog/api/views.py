from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import openapi
from catalog.api.serializers import SearchQuerySerializer, ServiceListQuerySerializer, ServiceReferenceSerializer
from catalog.models import SERVICE_REFERENCE_PATTERN, Service
from catalog.selectors import catalog_documents, catalog_search, closest_service_ids, service_list, service_resolve
from server402.api_errors import ApiError


def _params(serializer_class, data, **context):
    serializer = serializer_class(data=data, context=context)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CatalogSearchApi(APIView):
    @extend_schema(
        operation_id="search_services", summary="Find tools for a need", tags=["catalog"],
        description="Plain-language queries in English or Chinese, ids, legacy ids, tool names and action "
                    "names; typos are tolerated. Without q, every tool is listed.",
        parameters=[SearchQuerySerializer], auth=[],
        responses={200: OpenApiResponse(openapi.schema_ref("CatalogSearch"), description="Seed 001's answer."),
                   400: openapi.error("A parameter is out of range or names an unknown category.")},
    )
    def get(self, request):
        params = _params(SearchQuerySerializer, request.query_params)
        return Response(
            catalog_search(query=params["q"], limit=params["limit"], category=params["category"] or None)
        )


class ServiceListApi(APIView):
    @extend_schema(
        operation_id="list_services", summary="List the catalog", tags=["catalog"],
        parameters=[
            ServiceListQuerySerializer,
            # A blank value means the default, as for every query parameter DRF reads.
            OpenApiParameter("state", str, enum=["", *Service.State.values], default=Service.State.PUBLISHED,
                             description="published (the default) or draft (signed-in operators only)."),
        ],
        auth=openapi.OPERATOR_SESSION_OPTIONAL,
        responses={200: OpenApiResponse(openapi.schema_ref("ServiceList"), description="One page of services."),
                   400: openapi.error("A parameter is out of range or names an unknown category."),
                   403: openapi.error("Drafts are listed for signed-in operators only.")},
    )
    def get(self, request):
        operator = bool(request.user and request.user.is_staff)
        params = _params(ServiceListQuerySerializer, request.query_params, operator=operator)
        total, page = service_list(
            state=params["state"], category=params["category"], offset=params["offset"], limit=params["limit"]
        )
        filters = {k: v for k, v in params.items() if v not in ("", None)}
        return Response({"filters": filters, "total": total, "services": catalog_documents(page)})


class ServiceDetailApi(APIView):
    @extend_schema(
        operation_id="get_service", summary="One catalog entry", tags=["catalog"], auth=[],
        description="By canonical id, legacy internal id or MCP tool name.",
        parameters=[OpenApiParameter("service_id", str, OpenApiParameter.PATH, pattern=SERVICE_REFERENCE_PATTERN,
                                     description="Canonical id, legacy internal id or MCP tool name.")],
        responses={200: OpenApiResponse(openapi.schema_ref("CatalogEntry"), description="The entry."),
                   400: openapi.error("The id is malformed."),
                   404: openapi.error("No published service has this id; closestIds suggests some.")},
    )
    def get(self, request, service_id):
        reference = _params(ServiceReferenceSerializer, {"service_id": service_id})["service_id"]
        service = service_resolve(reference)
        if service is None:
            raise ApiError(
                f"service {reference!r} not found", status_code=status.HTTP_404_NOT_FOUND,
                closestIds=closest_service_ids(reference),
            )
        return Response(catalog_documents([service])[0])


class OpenApiDocumentApi(APIView):
    """GET /openapi.json: the OpenAPI 3.1 document of the HTTP API, in step with the catalog."""

    schema = None  # not part of the document it serves
    # Public and the same for everyone: no session to look up.
    authentication_classes: list = []

    def get(self, request):
        return HttpResponse(openapi.openapi_document_json(), content_type="application/json")

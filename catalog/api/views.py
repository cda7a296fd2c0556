from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.api.serializers import SearchQuerySerializer, ServiceListQuerySerializer, ServiceReferenceSerializer
from catalog.models import Service
from catalog.selectors import catalog_documents, catalog_search, closest_service_ids, service_list, service_resolve
from server402.api_errors import ApiError


def _params(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class CatalogSearchApi(APIView):
    def get(self, request):
        params = _params(SearchQuerySerializer, request.query_params)
        return Response(
            catalog_search(query=params["q"], limit=params["limit"], category=params["category"] or None)
        )


class ServiceListApi(APIView):
    def get(self, request):
        params = _params(ServiceListQuerySerializer, request.query_params)
        if params["state"] == Service.State.DRAFT and not (request.user and request.user.is_staff):
            raise ApiError("only operators can list draft services", status_code=status.HTTP_403_FORBIDDEN)
        total, page = service_list(
            state=params["state"], category=params["category"], offset=params["offset"], limit=params["limit"]
        )
        filters = {k: v for k, v in params.items() if v not in ("", None)}
        return Response({"filters": filters, "total": total, "services": catalog_documents(page)})


class ServiceDetailApi(APIView):
    def get(self, request, service_id):
        reference = _params(ServiceReferenceSerializer, {"service_id": service_id})["service_id"]
        service = service_resolve(reference)
        if service is None:
            raise ApiError(
                f"service {reference!r} not found", status_code=status.HTTP_404_NOT_FOUND,
                closestIds=closest_service_ids(reference),
            )
        return Response(catalog_documents([service])[0])

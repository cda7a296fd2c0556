from django.urls import path

from catalog.api import views

urlpatterns = [
    path("catalog/search", views.CatalogSearchApi.as_view(), name="catalog-search"),
    path("services", views.ServiceListApi.as_view(), name="service-list"),
    path("services/<str:service_id>", views.ServiceDetailApi.as_view(), name="service-detail"),
]

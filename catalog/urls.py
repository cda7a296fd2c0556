from django.urls import path

from catalog import views

urlpatterns = [
    path("", views.catalog_index, name="catalog-index"),
    path("services/<str:service_id>.md", views.service_page, {"markdown": True}, name="service-page-md"),
    path("services/<str:service_id>", views.service_page, name="service-page"),
    path("llms.txt", views.llms_txt, name="llms-txt"),
    path(".well-known/x402", views.x402_discovery, name="x402-discovery"),
]

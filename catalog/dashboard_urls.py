from django.urls import path

from catalog import views

urlpatterns = [
    path("services/", views.dashboard_services, name="dashboard-services"),
    path("services/<str:service_id>/", views.dashboard_service, name="dashboard-service"),
    path("pricing/", views.pricing_policies, name="dashboard-pricing"),
    path("pricing/new/", views.pricing_policy_new, name="dashboard-pricing-new"),
    path("pricing/<slug:policy_id>/", views.pricing_policy_edit, name="dashboard-pricing-policy"),
]

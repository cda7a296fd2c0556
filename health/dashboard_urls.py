from django.urls import path

from health import views

urlpatterns = [
    path("", views.overview, name="dashboard-overview"),
    path("health/runs/", views.health_runs, name="dashboard-health-runs"),
    path("health/runs/<int:run_id>/", views.health_run, name="dashboard-health-run"),
    path("services/<str:service_id>/check/", views.service_check, name="dashboard-service-check"),
]

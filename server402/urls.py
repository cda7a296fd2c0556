from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from catalog.api.views import OpenApiDocumentApi
from catalog.emulator import aliyun_emulator
from server402.mcp_endpoint import mcp_endpoint

dashboard = [
    path("login/", auth_views.LoginView.as_view(template_name="dashboard/login.html", redirect_authenticated_user=True),
         name="dashboard-login"),
    path("logout/", auth_views.LogoutView.as_view(), name="dashboard-logout"),
    path("", include("health.dashboard_urls")),
    path("", include("catalog.dashboard_urls")),
    path("", include("payments.dashboard_urls")),
    path("", include("jobs.dashboard_urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("catalog.api.urls")),
    path("openapi.json", OpenApiDocumentApi.as_view(), name="openapi"),
    path("sandbox/aliyun/<slug:product>/", aliyun_emulator),
    path("api/", include("payments.api.urls")),
    path("api/", include("jobs.api.urls")),
    path("dashboard/", include(dashboard)),
    path("mcp", mcp_endpoint, name="mcp"),
    path("", include("catalog.urls")),
]

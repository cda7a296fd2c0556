from django.contrib import admin
from django.urls import include, path

from catalog.emulator import aliyun_emulator

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("catalog.api.urls")),
    path("sandbox/aliyun/<slug:product>/", aliyun_emulator),
    path("api/", include("payments.api.urls")),
    path("", include("catalog.urls")),
]

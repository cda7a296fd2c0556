from django.urls import path

from jobs.api import views

urlpatterns = [
    path("jobs", views.JobListApi.as_view(), name="job-list"),
    path("jobs/<str:job_id>", views.JobDetailApi.as_view(), name="job-detail"),
]

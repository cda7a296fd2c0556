from django.urls import path

from jobs import views

urlpatterns = [
    path("jobs/", views.jobs_list, name="dashboard-jobs"),
    path("jobs/<str:job_id>/", views.job_detail, name="dashboard-job"),
]

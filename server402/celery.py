import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "server402.settings")

app = Celery("server402")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

from django.urls import path

from payments.api import views

urlpatterns = [
    path("tools/<str:service_id>", views.ToolCallApi.as_view(), name="tool-call"),
    path("payments", views.PaymentCreateApi.as_view(), name="payment-create"),
    path("payments/<str:payment_id>", views.PaymentDetailApi.as_view(), name="payment-detail"),
    path("payments/<str:payment_id>/pay", views.PaymentPayApi.as_view(), name="payment-pay"),
]

from django.urls import path

from payments import views

urlpatterns = [
    path("keys/", views.api_keys, name="dashboard-keys"),
    path("keys/<int:key_id>/", views.api_key_detail, name="dashboard-key"),
    path("keys/<int:key_id>/top-up/", views.api_key_top_up, name="dashboard-key-top-up"),
    path("keys/<int:key_id>/revoke/", views.api_key_revoke, name="dashboard-key-revoke"),
    path("keys/<int:key_id>/rotate/", views.api_key_rotate, name="dashboard-key-rotate"),
    path("payments/", views.payments_ledger, name="dashboard-payments"),
    path("payments/<str:payment_id>/", views.payment_detail, name="dashboard-payment"),
]

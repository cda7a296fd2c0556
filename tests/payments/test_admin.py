import pytest

pytestmark = pytest.mark.django_db


def test_operators_see_keys_payments_and_calls_in_the_admin(client, django_user_model, make_key, paid_token):
    key, _ = make_key()
    paid_token("celebrity-recognition", key)
    client.force_login(django_user_model.objects.create_superuser("root", password="pw"))
    for page in ("apikey", "payment", "toolcall"):
        assert client.get(f"/admin/payments/{page}/").status_code == 200
    page = client.get(f"/admin/payments/apikey/{key.pk}/change/").content.decode()
    assert key.secret_hash in page  # the hash is shown read-only; the secret itself exists nowhere

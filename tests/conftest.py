import json
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from catalog.services import REFERENCE_CATALOG, catalog_import

FIXTURES = Path(__file__).parent / "catalog" / "fixtures"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Every test database starts with the reference catalog; tests roll back their changes."""
    with django_db_blocker.unblock():
        catalog_import(paths=[REFERENCE_CATALOG])


@pytest.fixture(scope="session")
def seed_001():
    return json.loads((FIXTURES / "seed_001_catalog_search.json").read_text())


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_user("op", password="pw", is_staff=True)

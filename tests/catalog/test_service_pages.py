import re

import pytest
from django.test import override_settings

from catalog.models import Service

pytestmark = pytest.mark.django_db
# Seed 000's sections, in its order (the seed is one flattened line).
SEED_000_SECTIONS = ["Invocation", "Pricing And Payment", "Use Cases", "Keywords", "Input Schema", "Output Schema",
                     "Example Request", "Example Response"]


def test_the_page_for_people_is_html(client):
    response = client.get("/services/celebrity-recognition")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "<h1>Detect Celebrity Face And Body Analysis</h1>" in page
    assert "aliyun-facebody-detect-celebrity" in page and "sandbox" in page
    assert response["Vary"] == "Accept, Cookie"


@pytest.mark.parametrize("path, headers", [
    ("/services/image-recognition-job-result.md", {}),
    ("/services/image-recognition-job-result", {"HTTP_ACCEPT": "text/markdown"}),
    ("/services/aliyun-imagerecog-get-async-job-result.md", {}),
])
def test_agents_get_markdown_with_seed_000s_sections(client, path, headers):
    response = client.get(path, **headers)
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("# Get Async Job Result Image Recognition\n")
    # Seed 000's sections in its order, then what Server402 adds: live health and quality.
    assert re.findall(r"^## (.+)$", text, re.M) == [*SEED_000_SECTIONS, "Health And Quality"]
    for line in ["- Service ID: `image-recognition-job-result`",
                 "- Legacy internal service ID: `aliyun-imagerecog-get-async-job-result`",
                 "- MCP tool: `image_recognition_job_result`", "- Price: USD 0.20", "- Max calls per payment: `1`",
                 '"JobId": "example-job-id"']:
        assert line in text


def test_a_browser_accept_header_gets_html(client):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get("/services/face-search", HTTP_ACCEPT=accept)["Content-Type"].startswith("text/html")


@override_settings(PUBLIC_BASE_URL="https://tools.example.org")
def test_absolute_urls_come_from_the_public_base_url(client):
    text = client.get("/services/face-search.md").content.decode()
    assert "- Endpoint: `https://tools.example.org/api/tools/face-search`" in text
    assert "localhost" not in text and "testserver" not in text


@pytest.mark.parametrize("reference", ["\x00", "a\x00b", "Ünïcode", "x" * 400])
def test_a_malformed_id_has_no_page(client, reference):
    assert client.get(f"/services/{reference}").status_code == 404
    assert client.get(f"/services/{reference}.md").status_code == 404


def test_an_unknown_or_draft_service_has_no_page(client):
    service = Service.objects.get(id="face-filter")
    service.state = Service.State.DRAFT
    service.save()
    assert client.get("/services/face-filter").status_code == 404
    assert client.get("/services/no-such-service.md").status_code == 404


def test_a_name_with_markup_renders_as_text_in_html(client):
    service = Service.objects.get(id="face-search")
    service.name = "<script>alert(1)</script>"
    service.save()
    page = client.get("/services/face-search").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_llms_txt_lists_every_published_service_and_no_draft(client):
    service = Service.objects.get(id="face-filter")
    service.state = Service.State.DRAFT
    service.save()
    response = client.get("/llms.txt")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("# Server402\n")
    listed = re.findall(r"/services/([a-z0-9-]+)\.md\)", text)
    assert len(listed) == 61 and "face-filter" not in listed
    assert set(listed) == set(Service.objects.filter(state="published").values_list("id", flat=True))


def test_the_catalog_index_links_every_service(client):
    page = client.get("/").content.decode()
    assert page.count('href="/services/') == 62
